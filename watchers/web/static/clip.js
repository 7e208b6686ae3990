// The clip page: seek from the timeline and the lists, start at ?t=, keep the other channels of
// the moment in step, and move the map's marker with playback.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const ds = window.dashspool;
  const data = ds.pageData();
  const player = document.getElementById("player");
  const siblings = Array.from(document.querySelectorAll("video.sibling-video"));
  const playhead = document.getElementById("playhead");

  function seek(t) {
    if (!player) {
      return;
    }
    player.currentTime = t;
    for (const s of siblings) {
      s.currentTime = t;
    }
  }
  for (const el of document.querySelectorAll(".seek")) {
    el.addEventListener("click", function () {
      seek(parseFloat(el.dataset.t));
      if (player) {
        player.play().catch(function () {});
      }
    });
  }

  if (player) {
    const start = parseFloat(player.dataset.start) || 0;
    const begin = function () {
      if (start > 0) {
        seek(Math.min(start, player.duration || start));
      }
    };
    if (player.readyState >= 1) {
      begin();
    } else {
      player.addEventListener("loadedmetadata", begin, { once: true });
    }
    player.addEventListener("play", function () {
      for (const s of siblings) {
        s.currentTime = player.currentTime;
        s.play().catch(function () {});
      }
    });
    player.addEventListener("pause", function () {
      for (const s of siblings) {
        s.pause();
      }
    });
    player.addEventListener("seeked", function () {
      for (const s of siblings) {
        s.currentTime = player.currentTime;
      }
    });
  }

  // the map: the clip's track and a marker at the position for the current playback time
  const el = document.getElementById("map");
  const points = data.points || [];
  if (!el || !window.L || !points.length) {
    if (el) {
      el.classList.add("empty");
      el.textContent = "No GPS track for this clip.";
    }
    return;
  }
  const map = ds.map(el);
  const line = L.polyline(points.map(function (p) { return [p[1], p[2]]; }),
    { color: "#1565c0", weight: 4, className: "track" }).addTo(map);
  map.fitBounds(line.getBounds(), { padding: [20, 20], maxZoom: 17 });
  const here = L.circleMarker([points[0][1], points[0][2]],
    { radius: 8, color: "#c62828", fillOpacity: 0.9, className: "position" }).addTo(map);

  function follow() {
    const t = player ? player.currentTime : 0;
    let i = 0;
    while (i + 1 < points.length && points[i + 1][0] <= t) {
      i += 1;
    }
    const a = points[i];
    const b = points[i + 1];
    let lat = a[1];
    let lon = a[2];
    if (b && b[0] > a[0] && t > a[0]) {  // between two fixes: interpolate
      const f = Math.min(1, (t - a[0]) / (b[0] - a[0]));
      lat += (b[1] - a[1]) * f;
      lon += (b[2] - a[2]) * f;
    }
    here.setLatLng([lat, lon]);
    el.dataset.position = lat.toFixed(6) + "," + lon.toFixed(6);
    if (playhead && player && player.duration) {
      const x = (t / player.duration * 1000).toFixed(1);
      playhead.setAttribute("x1", x);
      playhead.setAttribute("x2", x);
    }
  }
  if (player) {
    player.addEventListener("timeupdate", follow);
    player.addEventListener("seeked", follow);
  }
  follow();
  el.dataset.ready = "yes";
});
