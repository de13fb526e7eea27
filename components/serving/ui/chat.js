// DuoGen chat page: streams /openai/v1/responses and shows text and pictures in the order they arrive.
"use strict";
const $ = (id) => document.getElementById(id);
// The conversation so far: the last stored response's id (a follow-up sends only its new turn), or, when the
// server keeps no responses, the earlier turns' items (pictures go back as image_generation_call items).
let previous = null;
const history = [];
$("token").value = localStorage.getItem("duogen-token") || "";
$("token").addEventListener("change", () => localStorage.setItem("duogen-token", $("token").value));

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("token").value) h.Authorization = "Bearer " + $("token").value;
  return h;
}

async function checkStatus() {
  try {
    const r = await fetch("/openai/v1/models", { headers: headers() });
    const body = await r.json();
    $("status").textContent = r.ok ? "model: " + body.data.map((m) => m.id).join(", ") : body.error.message;
  } catch (e) {
    $("status").textContent = "server unreachable";
  }
}

function bubble(role) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  $("log").appendChild(div);
  return div;
}

function addText(div, text) {
  const last = div.lastChild;
  if (last && last.nodeType === Node.TEXT_NODE) last.appendData(text);
  else div.appendChild(document.createTextNode(text));
  $("log").scrollTop = $("log").scrollHeight;
}

function addImage(div, src, alt) {
  const img = document.createElement("img");
  img.src = src;
  img.alt = alt;
  div.appendChild(img);
  $("log").scrollTop = $("log").scrollHeight;
  return img;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

$("files").addEventListener("change", async () => {
  $("attached").replaceChildren();
  for (const f of $("files").files) addImage($("attached"), await readFile(f), f.name);
});

$("clear").addEventListener("click", () => {
  history.length = 0;
  previous = null;
  $("log").replaceChildren();
});

// Parse a text/event-stream body into its events' data, up to the terminal [DONE].
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data === "[DONE]") return; // the stream's terminal event
      if (data) yield JSON.parse(data);
    }
  }
}

$("composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("prompt").value.trim();
  if (!text) return;
  const content = [{ type: "input_text", text }];
  const user = bubble("user");
  addText(user, text);
  for (const f of $("files").files) {
    const url = await readFile(f);
    content.push({ type: "input_image", image_url: url });
    addImage(user, url, f.name);
  }
  const answer = bubble("assistant");
  const body = {
    input: previous ? [{ role: "user", content }] : [...history, { role: "user", content }],
    stream: true,
    max_output_tokens: Number($("tokens").value),
    max_images: Number($("images").value),
  };
  if (previous) body.previous_response_id = previous;
  if ($("force").checked) body.tool_choice = { type: "image_generation" };
  $("send").disabled = true;
  $("prompt").value = "";
  $("files").value = "";
  $("attached").replaceChildren();
  const pending = {};
  try {
    const r = await fetch("/openai/v1/responses", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!r.ok) throw new Error((await r.json()).error.message);
    for await (const e of events(r)) {
      if (e.type === "response.output_text.delta") addText(answer, e.delta);
      else if (e.type === "response.image_generation_call.in_progress") {
        pending[e.item_id] = document.createElement("span");
        pending[e.item_id].className = "pending";
        pending[e.item_id].textContent = "drawing…";
        answer.appendChild(pending[e.item_id]);
      } else if (e.type === "response.output_item.done" && e.item.type === "image_generation_call") {
        const img = addImage(answer, "data:image/png;base64," + e.item.result, "generated picture");
        img.className = "generated";
        if (pending[e.item.id]) pending[e.item.id].remove();
      } else if (e.type === "error") throw new Error(e.error.message);
      else if (e.type === "response.completed" || e.type === "response.incomplete") {
        previous = e.response.store ? e.response.id : null;
        history.push({ role: "user", content });
        for (const item of e.response.output) {
          if (item.type === "message") history.push({ role: "assistant", content: item.content.map((c) => c.text).join("") });
          else history.push({ type: "image_generation_call", result: item.result });
        }
        answer.dataset.done = e.response.status;
      }
    }
  } catch (e) {
    answer.classList.add("error");
    addText(answer, "error: " + e.message);
    answer.dataset.done = "error";
  } finally {
    $("send").disabled = false;
  }
});

checkStatus();
