// Shared by the pages: the page's data block and a Leaflet map (tiles only when configured).
"use strict";

window.dashspool = {
  pageData: function () {
    const el = document.getElementById("page-data");
    return el ? JSON.parse(el.textContent) : {};
  },

  // A map in #map: the tile layer from [web] tile_url, else a blank background (no network).
  map: function (el) {
    const tiles = el.dataset.tileUrl;
    const map = L.map(el, { attributionControl: Boolean(tiles), zoomSnap: 0.25 });
    if (tiles) {
      L.tileLayer(tiles, { maxZoom: 19, attribution: el.dataset.tileAttribution || "" }).addTo(map);
    } else {
      el.classList.add("blank");
    }
    return map;
  },

  // A link element with text (never HTML) for marker popups.
  link: function (href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  },

  clock: function (seconds) {
    const s = Math.max(0, Math.floor(seconds));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  },
};
