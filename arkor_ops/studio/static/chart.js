// arkor-ops studio: the loss chart, plain SVG drawn from the run's training.log events: train
// loss as a solid line, eval loss dashed with a marker per evaluation, min-max scaling (a loss
// axis stops at 0), the nearest step under the pointer. Uses svg() from studio.js.
"use strict";

const BOX = { width: 720, height: 280, left: 56, right: 16, top: 14, bottom: 34 };

function drawChart(view) {
  const train = [...view.train.entries()].sort((a, b) => a[0] - b[0]);
  const evals = [...view.evals.entries()].sort((a, b) => a[0] - b[0]);
  const all = [...train, ...evals];
  if (!all.length) {
    view.chart.replaceChildren(svg("text", { x: 360, y: 140, class: "placeholder" },
      document.createTextNode("Waiting for training.log events…")));
    return;
  }
  const scale = scales(all);
  const parts = [...grid(scale)];
  if (train.length) parts.push(svg("path", { class: "train", d: pathOf(train, scale) }));
  if (evals.length) {
    parts.push(svg("path", { class: "eval", d: pathOf(evals, scale) }));
    for (const [step, loss] of evals) {
      parts.push(svg("circle", { class: "eval-pt", cx: scale.x(step), cy: scale.y(loss), r: 3.5 }));
    }
  }
  view.chart.dataset.trainPoints = train.length;
  view.chart.dataset.evalPoints = evals.length;
  view.chart.replaceChildren(...parts, hover(view, train, evals, scale));
}

function scales(points) {
  const steps = points.map((p) => p[0]);
  const losses = points.map((p) => p[1]);
  let [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  let [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  const pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.1 || 1;
  [y0, y1] = [y0 >= 0 && y0 - pad < 0 ? 0 : y0 - pad, y1 + pad]; // a loss axis stops at 0
  const w = BOX.width - BOX.left - BOX.right;
  const h = BOX.height - BOX.top - BOX.bottom;
  return {
    x0, x1, y0, y1,
    x: (step) => +(BOX.left + ((step - x0) / (x1 - x0)) * w).toFixed(1),
    y: (loss) => +(BOX.top + (1 - (loss - y0) / (y1 - y0)) * h).toFixed(1),
  };
}

function pathOf(points, scale) {
  return points.map(([s, l], i) => `${i ? "L" : "M"}${scale.x(s)},${scale.y(l)}`).join(" ");
}

function grid(scale) {
  const out = [];
  for (let i = 0; i <= 4; i += 1) {
    const loss = scale.y0 + ((scale.y1 - scale.y0) * i) / 4;
    const y = scale.y(loss);
    out.push(svg("line", { class: "grid", x1: BOX.left, x2: BOX.width - BOX.right, y1: y, y2: y }));
    out.push(svg("text", { class: "tick", x: BOX.left - 6, y: y + 4, "text-anchor": "end" },
      document.createTextNode(loss.toFixed(3))));
  }
  const bottom = BOX.height - BOX.bottom;
  const ticks = [...new Set([Math.ceil(scale.x0), Math.round((scale.x0 + scale.x1) / 2), Math.floor(scale.x1)])];
  for (const step of ticks) {
    out.push(svg("text", { class: "tick", x: scale.x(step), y: bottom + 16, "text-anchor": "middle" },
      document.createTextNode(String(step))));
  }
  out.push(svg("text", { class: "axis", x: BOX.width - BOX.right, y: BOX.height - 2, "text-anchor": "end" },
    document.createTextNode("step")));
  return out;
}

function hover(view, train, evals, scale) {
  const mark = svg("line", { class: "cursor", y1: BOX.top, y2: BOX.height - BOX.bottom, visibility: "hidden" });
  const label = svg("text", { class: "hover", y: BOX.top + 12, visibility: "hidden" });
  const area = svg("rect", {
    class: "hit", x: BOX.left, y: BOX.top, width: BOX.width - BOX.left - BOX.right,
    height: BOX.height - BOX.top - BOX.bottom,
  });
  const lookup = new Map(train);
  const evalAt = new Map(evals);
  const steps = [...new Set([...lookup.keys(), ...evalAt.keys()])].sort((a, b) => a - b);
  area.addEventListener("mousemove", (e) => {
    const box = view.chart.getBoundingClientRect();
    const x = ((e.clientX - box.left) / box.width) * BOX.width;
    const step = steps.reduce((best, s) => (Math.abs(scale.x(s) - x) < Math.abs(scale.x(best) - x) ? s : best), steps[0]);
    const parts = [`step ${step}`];
    if (lookup.has(step)) parts.push(`loss ${lookup.get(step).toFixed(4)}`);
    if (evalAt.has(step)) parts.push(`eval ${evalAt.get(step).toFixed(4)}`);
    const cx = scale.x(step);
    for (const [k, v] of [["x1", cx], ["x2", cx]]) mark.setAttribute(k, v);
    label.setAttribute("x", cx > BOX.width / 2 ? cx - 6 : cx + 6);
    label.setAttribute("text-anchor", cx > BOX.width / 2 ? "end" : "start");
    label.textContent = parts.join("  ");
    mark.setAttribute("visibility", "visible");
    label.setAttribute("visibility", "visible");
  });
  area.addEventListener("mouseleave", () => {
    mark.setAttribute("visibility", "hidden");
    label.setAttribute("visibility", "hidden");
  });
  return svg("g", {}, mark, label, area);
}

