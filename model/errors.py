"""The exceptions DuoGen raises for bad input; messages name the problem so a user can fix it."""


class DuoGenInputError(ValueError):
    """Bad user input (conversation, image, pack): the message names what is wrong."""


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: the message names the tensor and both shapes."""
