"""Toy-world state and edits: a scene of coloured shapes, pure validated actions and English instructions.

Everything is a frozen dataclass and every function is pure and seeded, so the same seed always yields the
same pages, videos and ground truth, and a judge can replay any task exactly.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def _default_colours() -> dict[str, tuple[int, int, int]]:
    # Far apart from each other and from the white background, so segmentation survives blur and JPEG.
    return {
        "red": (220, 30, 30),
        "green": (30, 170, 40),
        "blue": (30, 60, 220),
        "yellow": (235, 200, 20),
        "purple": (150, 40, 190),
    }


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of the world; small defaults keep it learnable on 2 CPU cores."""

    width: int = 64
    height: int = 64
    kinds: tuple[str, ...] = ("circle", "square", "triangle")
    colours: dict[str, tuple[int, int, int]] = field(default_factory=_default_colours)
    sizes: dict[str, int] = field(default_factory=lambda: {"small": 12, "large": 20})
    max_shapes: int = 4
    step: int = 8  # pixels moved by a named direction
    margin: int = 3  # minimum gap between shape boxes, so the checker can separate them
    background: tuple[int, int, int] = (255, 255, 255)

    def size_name(self, size: int) -> str:
        for name, px in self.sizes.items():
            if px == size:
                return name
        raise ValueError(f"size {size} px is not one of {sorted(self.sizes.values())}")


@dataclass(frozen=True)
class Shape:
    """One shape; (x, y) is the centre in pixels and its box is [x - size//2, x - size//2 + size)."""

    kind: str
    colour: str
    x: int
    y: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), right/bottom exclusive."""
        left, top = self.x - self.size // 2, self.y - self.size // 2
        return left, top, left + self.size, top + self.size


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    width: int = 64
    height: int = 64

    def __post_init__(self):
        object.__setattr__(self, "shapes", tuple(self.shapes))


@dataclass(frozen=True)
class Move:
    """Move by a named direction (cfg.step pixels) or by explicit dx, dy."""

    index: int
    direction: str | None = None
    dx: int = 0
    dy: int = 0

    def offset(self, cfg: WorldConfig) -> tuple[int, int]:
        if self.direction is None:
            return self.dx, self.dy
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; expected one of {sorted(DIRECTIONS)}")
        ux, uy = DIRECTIONS[self.direction]
        return ux * cfg.step, uy * cfg.step


@dataclass(frozen=True)
class Recolour:
    index: int
    colour: str


@dataclass(frozen=True)
class Add:
    shape: Shape


@dataclass(frozen=True)
class Remove:
    index: int


@dataclass(frozen=True)
class Resize:
    index: int
    size: int  # pixels, one of cfg.sizes


@dataclass(frozen=True)
class Swap:
    """Two shapes exchange centre positions."""

    i: int
    j: int


Action = Move | Recolour | Add | Remove | Resize | Swap


def touched_indices(action: Action) -> set[int]:
    """Indices (in the scene before the action) that the action may change; the rest must stay put."""
    if isinstance(action, Swap):
        return {action.i, action.j}
    if isinstance(action, Add):
        return set()
    return {action.index}


def _check_index(scene: Scene, index: int, what: str = "index") -> Shape:
    if not 0 <= index < len(scene.shapes):
        raise ValueError(f"shape {what} {index} out of range: scene has {len(scene.shapes)} shapes")
    return scene.shapes[index]


def validate(scene: Scene, cfg: WorldConfig) -> None:
    """Raise ValueError naming the first broken rule: vocabulary, canvas bounds, overlap, unique names."""
    if len(scene.shapes) > cfg.max_shapes:
        raise ValueError(f"too many shapes: {len(scene.shapes)} > max_shapes={cfg.max_shapes}")
    names = set()
    for s in scene.shapes:
        if s.kind not in cfg.kinds:
            raise ValueError(f"unknown kind {s.kind!r}; expected one of {list(cfg.kinds)}")
        if s.colour not in cfg.colours:
            raise ValueError(f"unknown colour {s.colour!r}; expected one of {list(cfg.colours)}")
        cfg.size_name(s.size)
        left, top, right, bottom = s.box()
        if left < 0 or top < 0 or right > scene.width or bottom > scene.height:
            raise ValueError(
                f"the {s.name} at ({s.x}, {s.y}) would be off the {scene.width}x{scene.height} canvas"
            )
        if s.name in names:
            raise ValueError(f"two shapes named 'the {s.name}': colour+kind must be unique in a scene")
        names.add(s.name)
    for a in range(len(scene.shapes)):
        for b in range(a + 1, len(scene.shapes)):
            p, q = scene.shapes[a], scene.shapes[b]
            pl, pt, pr, pb = p.box()
            ql, qt, qr, qb = q.box()
            m = cfg.margin
            if not (pr + m <= ql or qr + m <= pl or pb + m <= qt or qb + m <= pt):
                raise ValueError(f"the {p.name} and the {q.name} would overlap (need a {m} px gap)")


def apply(scene: Scene, action: Action, cfg: WorldConfig | None = None) -> Scene:
    """Return the scene after `action` (the input is untouched); ValueError for invalid or no-op edits."""
    cfg = cfg or WorldConfig()
    shapes = list(scene.shapes)
    if isinstance(action, Move):
        s = _check_index(scene, action.index)
        dx, dy = action.offset(cfg)
        if dx == 0 and dy == 0:
            raise ValueError(f"move of the {s.name} by (0, 0) does nothing")
        shapes[action.index] = dataclasses.replace(s, x=s.x + dx, y=s.y + dy)
    elif isinstance(action, Recolour):
        s = _check_index(scene, action.index)
        if action.colour == s.colour:
            raise ValueError(f"the {s.name} is already {action.colour}")
        shapes[action.index] = dataclasses.replace(s, colour=action.colour)
    elif isinstance(action, Add):
        if len(shapes) >= cfg.max_shapes:
            raise ValueError(
                f"cannot add the {action.shape.name}: scene already has max_shapes={cfg.max_shapes}"
            )
        shapes.append(action.shape)
    elif isinstance(action, Remove):
        _check_index(scene, action.index)
        del shapes[action.index]
    elif isinstance(action, Resize):
        s = _check_index(scene, action.index)
        if action.size == s.size:
            raise ValueError(f"the {s.name} is already {action.size} px")
        shapes[action.index] = dataclasses.replace(s, size=action.size)
    elif isinstance(action, Swap):
        p, q = _check_index(scene, action.i, "i"), _check_index(scene, action.j, "j")
        if action.i == action.j:
            raise ValueError(f"cannot swap the {p.name} with itself")
        shapes[action.i] = dataclasses.replace(p, x=q.x, y=q.y)
        shapes[action.j] = dataclasses.replace(q, x=p.x, y=p.y)
    else:
        raise ValueError(f"unknown action {action!r}")
    out = Scene(tuple(shapes), scene.width, scene.height)
    validate(out, cfg)
    return out


def region_name(x: int, y: int, width: int, height: int) -> str:
    col = ("left", "", "right")[min(2, 3 * x // width)]
    row = ("top", "", "bottom")[min(2, 3 * y // height)]
    return f"{row} {col}".strip() or "centre"


def describe(action: Action, scene: Scene, cfg: WorldConfig | None = None) -> str:
    """One English instruction for `action` applied to `scene` (the scene *before* the action)."""
    cfg = cfg or WorldConfig()
    if isinstance(action, Move):
        s = _check_index(scene, action.index)
        if action.direction is not None:
            where = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
            return f"Move the {s.name} {where[action.direction]}."
        parts = []
        if action.dx:
            parts.append(f"{abs(action.dx)} pixels {'right' if action.dx > 0 else 'left'}")
        if action.dy:
            parts.append(f"{abs(action.dy)} pixels {'down' if action.dy > 0 else 'up'}")
        return f"Move the {s.name} {' and '.join(parts)}."
    if isinstance(action, Recolour):
        return f"Make the {_check_index(scene, action.index).name} {action.colour}."
    if isinstance(action, Add):
        s = action.shape
        where = region_name(s.x, s.y, scene.width, scene.height)
        return f"Add a {cfg.size_name(s.size)} {s.name} at the {where}."
    if isinstance(action, Remove):
        return f"Remove the {_check_index(scene, action.index).name}."
    if isinstance(action, Resize):
        return f"Make the {_check_index(scene, action.index).name} {cfg.size_name(action.size)}."
    if isinstance(action, Swap):
        # Swapping is symmetric, so name the two shapes in reading order (top-to-bottom, left-to-right):
        # the sentence then depends only on what is visible, never on scene-list order.
        p, q = sorted(
            (_check_index(scene, action.i), _check_index(scene, action.j)), key=lambda s: (s.y, s.x, s.name)
        )
        return f"Swap the positions of the {p.name} and the {q.name}."
    raise ValueError(f"unknown action {action!r}")


@dataclass(frozen=True)
class Task:
    """An initial scene, the actions, and every intermediate scene (scenes[k + 1] = after actions[k])."""

    scenes: tuple[Scene, ...]
    actions: tuple[Action, ...]

    def instructions(self, cfg: WorldConfig | None = None) -> list[str]:
        return [describe(a, s, cfg) for a, s in zip(self.actions, self.scenes, strict=False)]


def _random_shape(rng: random.Random, cfg: WorldConfig, width: int, height: int) -> Shape:
    size = rng.choice(list(cfg.sizes.values()))
    left, top = rng.randint(0, width - size), rng.randint(0, height - size)
    return Shape(
        rng.choice(cfg.kinds), rng.choice(list(cfg.colours)), left + size // 2, top + size // 2, size
    )


def random_scene(rng: random.Random, cfg: WorldConfig, n: int | None = None, tries: int = 1000) -> Scene:
    """A valid scene with n shapes (default: random in 1..max_shapes), placed by rejection sampling."""
    n = rng.randint(1, cfg.max_shapes) if n is None else n
    scene = Scene((), cfg.width, cfg.height)
    for _ in range(tries):
        if len(scene.shapes) == n:
            return scene
        try:
            scene = apply(scene, Add(_random_shape(rng, cfg, cfg.width, cfg.height)), cfg)
        except ValueError:
            continue
    raise ValueError(f"could not place {n} shapes on a {cfg.width}x{cfg.height} canvas in {tries} tries")


ACTION_KINDS = ("move", "recolour", "add", "remove", "resize", "swap")


def random_action(rng: random.Random, scene: Scene, cfg: WorldConfig, kind: str | None = None) -> Action:
    """An action of `kind` (default: any) on random shapes; it may still be invalid for `apply`."""
    n = len(scene.shapes)
    kind = kind or rng.choice(list(ACTION_KINDS))
    if kind == "add" or n == 0:
        return Add(_random_shape(rng, cfg, scene.width, scene.height))
    i = rng.randrange(n)
    if kind == "move":
        return Move(i, rng.choice(list(DIRECTIONS)))
    if kind == "recolour":
        return Recolour(i, rng.choice(list(cfg.colours)))
    if kind == "remove":
        return Remove(i)
    if kind == "resize":
        return Resize(i, rng.choice(list(cfg.sizes.values())))
    return Swap(i, rng.randrange(n))


def random_task(
    rng: random.Random | int,
    cfg: WorldConfig | None = None,
    steps: int = 3,
    kinds: tuple[str, ...] | None = None,
) -> Task:
    """A random initial scene plus `steps` valid actions (invalid draws are rejected and redrawn), each of a
    kind drawn from `kinds` (default: any of ACTION_KINDS)."""
    cfg = cfg or WorldConfig()
    rng = random.Random(rng) if isinstance(rng, int) else rng
    if kinds is not None and (not kinds or set(kinds) - set(ACTION_KINDS)):
        unknown = sorted(set(kinds) - set(ACTION_KINDS))
        raise ValueError(f"unknown action kinds {unknown}; choose one or more of {list(ACTION_KINDS)}")
    for _ in range(100):
        scenes, actions = [random_scene(rng, cfg, rng.randint(1, max(1, cfg.max_shapes - 1)))], []
        for _ in range(2000):
            if len(actions) == steps:
                return Task(tuple(scenes), tuple(actions))
            action = random_action(rng, scenes[-1], cfg, kind=rng.choice(kinds) if kinds else None)
            if isinstance(action, Remove) and len(scenes[-1].shapes) == 1:
                continue  # keep at least one shape so every step has something to see
            try:
                scenes.append(apply(scenes[-1], action, cfg))
            except ValueError:
                continue
            actions.append(action)
    raise ValueError(f"could not draw a {steps}-step task")
