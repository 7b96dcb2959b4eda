// Shared by every app's page (apps/pages): the caller's token, calls that send it, and a few
// DOM helpers. Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";
const MLSD = (() => {
  const root = document.body.dataset.root || "";  // the app's route prefix, e.g. /visual-search
  const KEY = "mlsd-token";
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {  // a link like .../visual-search/#token=... (the fragment is never sent)
    localStorage.setItem(KEY, fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const tokenInput = document.getElementById("token");
  if (tokenInput) {
    tokenInput.value = localStorage.getItem(KEY) || "";
    tokenInput.addEventListener("change", () => localStorage.setItem(KEY, tokenInput.value.trim()));
  }
  const statusEl = document.getElementById("status");

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = localStorage.getItem(KEY);
    if (t) h.Authorization = "Bearer " + t;
    return h;
  }

  async function call(path, opts) {
    opts = opts || {};
    const r = await fetch(root + path, Object.assign({}, opts, { headers: headers(opts.headers) }));
    if (!r.ok) {
      let detail = r.statusText;
      try { const body = await r.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* not JSON */ }
      throw new Error(r.status + ": " + detail);
    }
    return r;
  }

  return {
    root,
    json: async (path, opts) => (await call(path, opts)).json(),
    sendJSON: async (path, method, body) => (await call(path, {
      method, body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
    })).json(),
    // an image the browser may only fetch with the token: -> an object URL for <img src>
    blobURL: async (path) => URL.createObjectURL(await (await call(path)).blob()),
    status(text, kind) {
      statusEl.textContent = text;
      statusEl.className = kind || "";
    },
    el(tag, attrs, ...children) {
      const e = document.createElement(tag);
      for (const [k, v] of Object.entries(attrs || {})) {
        if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else if (k === "dataset") Object.assign(e.dataset, v); else e.setAttribute(k, v);
      }
      for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
      return e;
    },
    // a drop zone + file picker: calls onFile(file) for the chosen image
    dropZone(zone, input, onFile) {
      zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
      zone.addEventListener("dragleave", () => zone.classList.remove("over"));
      zone.addEventListener("drop", (ev) => {
        ev.preventDefault(); zone.classList.remove("over");
        if (ev.dataTransfer.files.length) onFile(ev.dataTransfer.files[0]);
      });
      input.addEventListener("change", () => { if (input.files.length) onFile(input.files[0]); });
    },
    async guard(what, fn) {  // run an action, showing progress and any error
      MLSD.status(what + "…");
      try { const out = await fn(); return out; } catch (e) { MLSD.status(what + " failed: " + e.message, "error"); throw e; }
    },
  };
})();
