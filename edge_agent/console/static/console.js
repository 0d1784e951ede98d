// Charts for the console pages. Data comes from <script type="application/json"> blocks the
// server rendered (never executed as code); this file is the only script the pages run
// besides the vendored ECharts and htmx (the Content-Security-Policy allows nothing else).
(function () {
  "use strict";
  function data(el) {
    var src = document.getElementById(el.getAttribute("data-source"));
    return src ? JSON.parse(src.textContent) : [];
  }
  var builders = {
    trend: function (rows) {
      return {
        // the "simple" ECharts build has no legend component: the page prints the legend
        grid: { left: 40, right: 50, top: 30, bottom: 30 },
        xAxis: { type: "category", data: rows.map(function (r) { return r.day.slice(5); }) },
        yAxis: [{ type: "value", name: "条" }, { type: "value", name: "%", min: 0, max: 100 }],
        series: [
          { name: "评价数", type: "bar", data: rows.map(function (r) { return r.total; }) },
          { name: "差评", type: "bar", data: rows.map(function (r) { return r.bad; }), itemStyle: { color: "#c0392b" } },
          { name: "满意率%", type: "line", yAxisIndex: 1, connectNulls: true, itemStyle: { color: "#91cc75" }, data: rows.map(function (r) { return r.satisfaction; }) }
        ]
      };
    },
    reasons: function (rows) {
      rows = rows.slice(0, 10).reverse();
      return {
        grid: { left: 180, right: 20, top: 10, bottom: 20 },
        xAxis: { type: "value" },
        yAxis: { type: "category", data: rows.map(function (r) { return r.name; }) },
        series: [{ type: "bar", data: rows.map(function (r) { return r.n; }), itemStyle: { color: "#c0392b" } }]
      };
    }
  };
  function draw() {
    if (!window.echarts) { return; }
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var build = builders[el.getAttribute("data-chart")];
      if (!build) { return; }
      var chart = window.echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(build(data(el)));
      el.setAttribute("data-drawn", "1");
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
