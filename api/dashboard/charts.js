// Charts drawn by ECharts (vendor/echarts.min.js, a global): each helper takes a container and data from the API.
// Charts are disposed of with the view that made them (disposeCharts), so live refreshes do not leak.

import { fmt } from "./api.js";

const charts = new Set();

export function chart(element) {
  const instance = echarts.getInstanceByDom(element) || echarts.init(element, null, { renderer: "canvas" });
  charts.add(instance);
  return instance;
}

export function disposeCharts() {
  for (const instance of charts) instance.dispose();
  charts.clear();
}

window.addEventListener("resize", () => {
  for (const instance of charts) instance.resize();
});

const STATE_LINE = { complete: "solid", running: "solid", pruned: "dashed", failed: "dotted" };

// One line per trial: x = epoch; pruned trials dashed, failed dotted, so a stopped curve reads as stopped.
export function curvesChart(element, curves, metric, onClick) {
  const series = curves.map((curve) => ({
    type: "line",
    name: curve.key,
    showSymbol: curve.steps.length < 2,
    symbolSize: 4,
    data: curve.steps.map((step, i) => [step, curve.values[metric][i]]),
    lineStyle: { type: STATE_LINE[curve.state] || "solid", width: curve.state === "running" ? 2.5 : 1.2 },
    emphasis: { focus: "series" },
    trialId: curve.trial_id,
    state: curve.state,
  }));
  const instance = chart(element);
  instance.setOption(
    {
      animation: false,
      title: { text: metric, left: "center", textStyle: { fontSize: 13 } },
      tooltip: {
        trigger: "item",
        formatter: (p) => `${p.seriesName} (${series[p.seriesIndex].state})<br>epoch ${p.value[0]}: ${fmt(p.value[1])}`,
      },
      grid: { left: 50, right: 16, top: 30, bottom: 30 },
      xAxis: { type: "value", name: "epoch", minInterval: 1 },
      yAxis: { type: "value", scale: true },
      series,
    },
    { notMerge: true },
  );
  if (onClick) {
    instance.off("click");
    instance.on("click", (p) => onClick(series[p.seriesIndex].trialId));
  }
}

// Each trial's score (dots) and the best so far (a step line) against the trial number.
export function historyChart(element, history, onClick) {
  const instance = chart(element);
  const best = history.best.map((p) => [p.number, p.score]);
  if (best.length) best.push([Math.max(history.total, best[best.length - 1][0]), best[best.length - 1][1]]);
  instance.setOption(
    {
      animation: false,
      tooltip: { trigger: "item", formatter: (p) => `${p.data[2] || ""} #${p.data[0]}: ${fmt(p.data[1])}` },
      legend: { top: 0 },
      grid: { left: 50, right: 16, top: 30, bottom: 30 },
      xAxis: { type: "value", name: "trial", minInterval: 1 },
      yAxis: { type: "value", name: history.score, scale: true },
      series: [
        {
          name: "trial",
          type: "scatter",
          symbolSize: 5,
          large: history.points.length > 2000,
          data: history.points.map((p) => [p.number, p.score, p.key, p.trial_id]),
        },
        { name: "best so far", type: "line", step: "end", showSymbol: false, data: best },
      ],
    },
    { notMerge: true },
  );
  if (onClick) {
    instance.off("click");
    instance.on("click", (p) => p.seriesIndex === 0 && onClick(p.data[3]));
  }
}

// The Pareto front (joined, highlighted) over the dominated trials (grey), score up against cost right.
export function paretoChart(element, pareto, onClick) {
  const point = (p) => [p.cost, p.score, p.key, p.trial_id];
  const instance = chart(element);
  instance.setOption(
    {
      animation: false,
      tooltip: {
        trigger: "item",
        formatter: (p) => `${p.data[2]}<br>${pareto.cost} ${fmt(p.data[0])}, ${pareto.score} ${fmt(p.data[1])}`,
      },
      legend: { top: 0 },
      grid: { left: 50, right: 30, top: 30, bottom: 30 },
      xAxis: { type: pareto.cost === "params" ? "log" : "value", name: pareto.cost, scale: true },
      yAxis: { type: "value", name: pareto.score, scale: true },
      series: [
        {
          name: `dominated (${pareto.others_total})`,
          type: "scatter",
          symbolSize: 5,
          itemStyle: { color: "#b8c0cc" },
          large: pareto.others.length > 2000,
          data: pareto.others.map(point),
        },
        {
          name: `Pareto front (${pareto.front.length})`,
          type: "line",
          step: "end",
          symbolSize: 8,
          itemStyle: { color: "#d9480f" },
          data: pareto.front.map(point),
        },
      ],
    },
    { notMerge: true },
  );
  if (onClick) {
    instance.off("click");
    instance.on("click", (p) => onClick(p.data[3]));
  }
}

// Parallel coordinates of the hyperparameters that vary, coloured by the score (the last axis).
export function parallelChart(element, dimensions, rows, score) {
  const scores = rows.map((row) => row[row.length - 1]);
  const instance = chart(element);
  instance.setOption(
    {
      animation: false,
      parallelAxis: dimensions.map((d, i) =>
        d.categories
          ? { dim: i, name: d.name, type: "category", data: d.categories }
          : { dim: i, name: d.name, type: d.log ? "log" : "value", scale: true },
      ),
      parallel: { left: 50, right: 80, top: 30, bottom: 30 },
      visualMap: {
        type: "continuous",
        dimension: dimensions.length - 1,
        min: Math.min(...scores),
        max: Math.max(...scores),
        right: 0,
        top: "middle",
        calculable: true,
        text: [score, ""],
        inRange: { color: ["#4c6ef5", "#fab005", "#e03131"] },
      },
      series: [{ type: "parallel", lineStyle: { width: 1, opacity: 0.6 }, data: rows }],
    },
    { notMerge: true },
  );
}

// A confusion matrix (rows: true class, columns: predicted) as a heatmap with the counts written in.
export function confusionChart(element, matrix, classes) {
  const data = [];
  matrix.forEach((row, t) => row.forEach((count, p) => data.push([p, t, count])));
  const instance = chart(element);
  instance.setOption(
    {
      animation: false,
      tooltip: { formatter: (p) => `true ${classes[p.data[1]]}, predicted ${classes[p.data[0]]}: ${p.data[2]}` },
      grid: { left: 80, right: 20, top: 20, bottom: 60 },
      xAxis: { type: "category", data: classes, name: "predicted", nameLocation: "center", nameGap: 35 },
      yAxis: { type: "category", data: classes, name: "true", inverse: true },
      visualMap: { show: false, min: 0, max: Math.max(1, ...data.map((d) => d[2])), inRange: { color: ["#f1f3f5", "#1971c2"] } },
      series: [{ type: "heatmap", data, label: { show: true } }],
    },
    { notMerge: true },
  );
}

// Every numeric per-epoch value of one or more trials: losses on the left axis, scores (0..1) on the right.
export function epochsChart(element, trials) {
  const series = [];
  for (const trial of trials) {
    const names = new Set();
    for (const step of trial.steps) {
      for (const [name, value] of Object.entries(step.metrics)) if (typeof value === "number") names.add(name);
    }
    for (const name of names) {
      const loss = name.includes("loss");
      series.push({
        type: "line",
        name: trials.length > 1 ? `${trial.id}: ${name}` : name,
        yAxisIndex: loss ? 0 : 1,
        showSymbol: trial.steps.length < 30,
        data: trial.steps.map((s) => [s.step, typeof s.metrics[name] === "number" ? s.metrics[name] : null]),
      });
    }
  }
  chart(element).setOption(
    {
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { type: "scroll", top: 0 },
      grid: { left: 50, right: 50, top: 40, bottom: 30 },
      xAxis: { type: "value", name: "epoch", minInterval: 1 },
      yAxis: [
        { type: "value", name: "loss", scale: true },
        { type: "value", name: "score", scale: true },
      ],
      series,
    },
    { notMerge: true },
  );
}
