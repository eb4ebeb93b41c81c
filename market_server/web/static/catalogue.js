// Progressive enhancement only: every page works without this file.
// Served by the market itself; the Content-Security-Policy allows no other script.
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  ready(function () {
    // "Copy" buttons next to the download commands (hidden without JavaScript).
    document.querySelectorAll("button.copy[data-copy]").forEach(function (btn) {
      var target = document.getElementById(btn.getAttribute("data-copy"));
      if (!target) { return; }
      btn.hidden = false;
      btn.addEventListener("click", function () {
        var text = target.textContent;
        var done = function () { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(done, function () { select(target); });
        } else {
          select(target);
        }
      });
    });

    // The island map: the hovered (or focused) point's name in the caption.
    var caption = document.getElementById("map-caption");
    if (caption) {
      var initial = caption.textContent;
      document.querySelectorAll(".map-point").forEach(function (pt) {
        var show = function () {
          caption.textContent = (pt.getAttribute("data-name") || "(no name)") + " \u2014 " + pt.getAttribute("data-id");
          pt.classList.add("hover");
        };
        var hide = function () { caption.textContent = initial; pt.classList.remove("hover"); };
        pt.addEventListener("mouseenter", show);
        pt.addEventListener("focus", show);
        pt.addEventListener("mouseleave", hide);
        pt.addEventListener("blur", hide);
      });
    }
  });

  function select(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
})();
