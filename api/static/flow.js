// The run page's flow diagram: d3-sankey lays the server's nodes and links out, this draws
// them as SVG. The data is the page's own JSON (#flow-data), built from the precomputed
// reconciliation; nothing else is fetched. Every figure drawn is also in #flow-table.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var holder = document.getElementById("flow");
  var source = document.getElementById("flow-data");
  if (!holder || !source || !window.d3 || !window.d3.sankey) {
    return;
  }
  var data = JSON.parse(source.textContent);
  var LABEL_ROOM = 150; // right of the last column, for its labels

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, attrs[k]);
    });
    if (parent) {
      parent.appendChild(node);
    }
    return node;
  }

  function fmt(n) {
    return Number(n).toLocaleString("en-US");
  }

  function text(parent, x, y, lines, anchor) {
    var t = el("text", { x: x, y: y, "text-anchor": anchor || "start" }, parent);
    lines.forEach(function (line, i) {
      var span = el("tspan", { x: x, dy: i === 0 ? "0.35em" : "1.2em" }, t);
      span.setAttribute("class", i === 0 ? "l1" : "l2");
      span.textContent = line;
    });
    return t;
  }

  // Short lines: a column is ~140 px wide on a laptop, and labels must not run into the next.
  function nodeLines(n) {
    if (n.kind === "stage") {
      return [n.label].concat(n.detail.split(" → "));
    }
    if (n.kind === "extra_rows") {
      return ["+" + fmt(n.figure) + " extra rows", n.detail.replace(" clients", "")];
    }
    if (n.kind === "dropped" || n.kind === "dropped_unreported") {
      return [fmt(n.figure) + " dropped", n.kind === "dropped" ? "reported" : "operational only"];
    }
    return [fmt(n.figure) + " " + n.label];
  }

  function nodeName(n) {
    if (n.kind === "stage") {
      return "stage " + n.label + ": " + n.detail;
    }
    if (n.stage && n.kind !== "stage") {
      var what = n.kind === "extra_rows" ? "extra rows (" + n.detail + ")" : n.label;
      return fmt(n.figure) + " " + what + " at " + n.stage;
    }
    return fmt(n.figure) + " " + n.label;
  }

  function linkPath(l) {
    var x0 = l.source.x1;
    var x1 = l.target.x0;
    var xi = (x0 + x1) / 2;
    return "M" + x0 + "," + l.y0 + "C" + xi + "," + l.y0 + " " + xi + "," + l.y1 + " " + x1 + "," + l.y1;
  }

  function draw() {
    var width = Math.max(holder.clientWidth, 760);
    var perColumn = {};
    data.nodes.forEach(function (n) {
      perColumn[n.column] = (perColumn[n.column] || 0) + 1;
    });
    var stack = Math.max.apply(null, Object.keys(perColumn).map(function (k) { return perColumn[k]; }));
    var height = Math.max(340, 150 + stack * 64);
    var layout = window.d3
      .sankey()
      .nodeId(function (d) { return d.id; })
      .nodeAlign(function (d) { return d.column; })
      .nodeSort(function (a, b) { return a.order - b.order; })
      .nodeWidth(14)
      .nodePadding(44)
      .extent([[4, 58], [width - LABEL_ROOM, height - 24]]);
    var graph = layout({
      nodes: data.nodes.map(function (d) { return Object.assign({}, d); }),
      links: data.links.map(function (d) { return Object.assign({}, d); })
    });

    var svg = el("svg", {
      viewBox: "0 0 " + width + " " + height,
      width: "100%",
      class: "flow-svg",
      "aria-labelledby": "flow-title",
      role: "group"
    });
    var title = el("title", { id: "flow-title" }, svg);
    title.textContent = "Flow of clients through the run, stage by stage";

    var links = el("g", { class: "links" }, svg);
    graph.links.forEach(function (l) {
      var path = el("path", {
        d: linkPath(l),
        "stroke-width": Math.max(1.5, l.width),
        class: "link k-" + l.kind + " t-" + l.target.kind,
        "data-source": l.source.id,
        "data-target": l.target.id,
        "data-value": l.value
      }, links);
      var tip = el("title", {}, path);
      tip.textContent = (l.exact ? "" : "at most ") + fmt(l.value) + " " + l.unit + ": " +
        l.source.label + " → " + l.target.label;
    });

    var nodes = el("g", { class: "nodes" }, svg);
    graph.nodes.forEach(function (n) {
      var group = n.href ? el("a", { href: n.href, "aria-label": nodeName(n) }, nodes) : el("g", {}, nodes);
      group.setAttribute("class", "node k-" + n.kind);
      group.setAttribute("data-node", n.id);
      group.setAttribute("data-kind", n.kind);
      group.setAttribute("data-value", n.figure);
      if (n.stage) {
        group.setAttribute("data-stage", n.stage);
      }
      var h = Math.max(3, n.y1 - n.y0); // a handful of clients among thousands stays visible
      el("rect", { x: n.x0, y: n.y0, width: n.x1 - n.x0, height: h }, group);
      var tip = el("title", {}, group);
      tip.textContent = nodeName(n);
      var lines = nodeLines(n);
      if (n.kind === "stage") { // above its node: stages are tall, their right is all flows
        text(group, n.x0, n.y0 - 8 - 14.4 * (lines.length - 1) - 4, lines);
      } else {
        text(group, n.x1 + 6, n.y0 + h / 2 - (lines.length > 1 ? 7 : 0), lines);
      }
    });
    holder.replaceChildren(svg);
    holder.setAttribute("data-drawn", "1");
    if (window.performance && performance.mark) {
      performance.mark("tracer:flow-drawn"); // bench/web.py times the page to this mark
    }
  }

  draw();
  var pending = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(pending);
    pending = window.setTimeout(draw, 150);
  });
})();
