// The pipeline page's buttons: POST with the token the person typed (sessionStorage, this tab
// only) as a Bearer header, then reload to show the new state.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const KEY = "dashspool-token";
  const input = document.getElementById("token");
  const state = document.getElementById("token-state");
  const result = document.getElementById("action-result");

  function show() {
    if (state) {
      state.textContent = sessionStorage.getItem(KEY) ? "token set for this tab" : "no token set";
    }
  }
  const save = document.getElementById("token-save");
  if (save) {
    save.addEventListener("click", function () {
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      show();
    });
  }
  const forget = document.getElementById("token-forget");
  if (forget) {
    forget.addEventListener("click", function () {
      sessionStorage.removeItem(KEY);
      show();
    });
  }
  show();

  for (const button of document.querySelectorAll("button.action")) {
    button.addEventListener("click", async function () {
      const token = sessionStorage.getItem(KEY) || "";
      button.disabled = true;
      const response = await fetch(button.dataset.url, {
        method: "POST",
        headers: { Authorization: "Bearer " + token },
        credentials: "omit",
      });
      let body = {};
      try {
        body = await response.json();
      } catch (e) {
        body = {};
      }
      if (response.ok) {
        window.location.reload();
        return;
      }
      button.disabled = false;
      result.textContent = response.status + ": " + (body.detail || response.statusText);
      result.classList.add("error");
    });
  }
});
