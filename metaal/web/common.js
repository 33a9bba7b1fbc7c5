// shared by the pool page (index.html) and the stream page (stream.html)

function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }

async function call(method, url, body) {
  const r = await fetch(url, { method, headers: {"Content-Type": "application/json"},
                               body: body === undefined ? undefined : JSON.stringify(body) });
  const js = await r.json();
  if (!r.ok) throw new Error(js.error || r.statusText);
  return js;
}

function pct(a) { return a === null || a === undefined ? "-" : (100 * a).toFixed(1) + "%"; }

// the item as the server's display() describes it: its text, its image, or its extreme features
function itemHtml(d, id, over) {
  if (d.kind === "text") return `<div id="item-text">${esc(d.text)}</div>`;
  if (d.kind === "image") return `<img id="item-image" src="${d.url}" alt="item ${id}">`;
  return `<div class="muted">${d.n_features} features (z = standardized over the ${over})</div><table class="feats">` +
    d.features.map(f => `<tr><td>${esc(f.name)}</td><td>${f.value.toPrecision(4)}</td><td>z=${f.z.toFixed(2)}</td></tr>`).join("") + "</table>";
}

// one button per class, its key shown, the model's guess framed; a click calls onLabel(index)
function renderButtons(classes, keys, guess, onLabel) {
  document.getElementById("buttons").innerHTML = classes.map((c, i) =>
    `<button id="class-${i}" data-label="${i}" class="${i === guess ? "guess" : ""}">${keys[i] !== null ? "<kbd>" + keys[i] + "</kbd> " : ""}${esc(c)}</button>`).join("");
  document.querySelectorAll("#buttons button").forEach(b => b.onclick = () => onLabel(Number(b.dataset.label)));
}
