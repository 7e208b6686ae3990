// The trip page: the track, and objects and plates as markers that open the clip at their second.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const ds = window.dashspool;
  const data = ds.pageData();
  const el = document.getElementById("map");
  if (!el || !window.L) {
    return;
  }
  const map = ds.map(el);
  const layers = [];
  if (data.points.length) {
    layers.push(L.polyline(data.points, { color: "#1565c0", weight: 4, className: "track" }));
    layers.push(L.circleMarker(data.points[0], { radius: 5, color: "#000", className: "start" }));
  }
  function marker(item, color, cls, text) {
    const m = L.circleMarker([item.lat, item.lon], {
      radius: 7, color: color, fillColor: color, fillOpacity: 0.8, className: cls,
    });
    const href = "/clips/" + encodeURIComponent(item.video_id) + "?t=" + item.t.toFixed(1);
    m.bindPopup(ds.link(href, text + " at " + ds.clock(item.t)));
    const label = document.createElement("span");  // an element: Leaflet would parse a string
    label.textContent = text;
    m.bindTooltip(label);
    return m;
  }
  for (const d of data.detections) {
    layers.push(marker(d, "#2e7d32", "marker-detection", d.label));
  }
  for (const p of data.plates) {
    layers.push(marker(p, "#c62828", "marker-plate", p.text));
  }
  const group = L.featureGroup(layers).addTo(map);
  if (layers.length) {
    map.fitBounds(group.getBounds(), { padding: [30, 30], maxZoom: 17 });
  } else {
    map.setView([0, 0], 1);
  }
  el.dataset.ready = "yes";
});
