// The page's own code: the operator's token and the price charts. Everything else is HTML the
// dashboard renders and htmx swaps in from the event stream.
"use strict";

(function () {
  // -- the operator's token: kept in this tab's sessionStorage only, sent with halt/resume ----
  const TOKEN_KEY = "tranche.safetyToken";
  const tokenInput = document.getElementById("token");
  const access = document.getElementById("access");

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function showAccess() {
    const operator = token() !== "";
    document.body.classList.toggle("operator", operator);
    access.textContent = operator ? "operator: halt / resume enabled" : "read-only";
  }

  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = tokenInput.value.trim();
    if (typed) sessionStorage.setItem(TOKEN_KEY, typed);
    tokenInput.value = "";
    showAccess();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showAccess();
  });
  document.body.addEventListener("htmx:configRequest", (event) => {
    if (token()) event.detail.headers["Authorization"] = "Bearer " + token();
  });
  // A refusal is a sentence for the operator: show it instead of dropping it.
  document.body.addEventListener("htmx:beforeSwap", (event) => {
    if (event.detail.xhr.status >= 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  showAccess();

  // -- charts: one per product, fed with only the points and marks the page has not had yet --
  const LWC = window.LightweightCharts;
  const charts = {};
  const FIAT = new Set(["USD", "USDC", "USDT", "EUR", "GBP"]);

  function chartFor(product) {
    if (charts[product]) return charts[product];
    document.getElementById("no-prices")?.remove();
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.product = product;
    figure.dataset.points = "0";
    figure.dataset.marks = "0";
    const caption = document.createElement("figcaption");
    caption.textContent = product;
    const plot = document.createElement("div");
    plot.className = "plot";
    figure.append(caption, plot);
    document.getElementById("charts").append(figure);
    const places = FIAT.has(product.split("-").pop()) ? 2 : 8;
    const chart = LWC.createChart(plot, {
      autoSize: true,
      layout: { background: { color: "#11161d" }, textColor: "#c9d1d9" },
      grid: { vertLines: { color: "#1d252f" }, horzLines: { color: "#1d252f" } },
      timeScale: { timeVisible: true, secondsVisible: false },
    });
    const series = chart.addSeries(LWC.LineSeries, {
      color: "#58a6ff",
      lineWidth: 2,
      priceFormat: { type: "price", precision: places, minMove: Math.pow(10, -places) },
    });
    const entry = { figure, caption, chart, series, markers: LWC.createSeriesMarkers(series, []),
                    times: [], marks: [] };
    charts[product] = entry;
    return entry;
  }

  // A mark sits on the newest price point at or before its fill (the chart draws marks on points).
  function onPoint(times, time) {
    let lo = 0, hi = times.length - 1, found = times[0];
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (times[mid] <= time) { found = times[mid]; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  }

  function drawMarks(c) {
    if (!c.times.length) return;
    const shown = c.marks.map((m) => {
      const buy = m.side === "buy";
      return {
        time: onPoint(c.times, m.time),
        position: buy ? "belowBar" : "aboveBar",
        shape: buy ? "arrowUp" : "arrowDown",
        color: buy ? "#3fb950" : "#f85149",
        text: m.action, // the bot and the size are in the feed; long labels hide the line
      };
    });
    shown.sort((a, b) => a.time - b.time);
    c.markers.setMarkers(shown);
  }

  function applyChart(news) {
    if (news.full) {
      for (const c of Object.values(charts)) { c.times = []; c.marks = []; c.series.setData([]); }
    }
    for (const [product, points] of Object.entries(news.points)) {
      const c = chartFor(product);
      for (const [time, price] of points) {
        // Prices are decimal strings; a number is made here only to place the point on screen.
        c.series.update({ time, value: Number(price) });
        if (c.times[c.times.length - 1] !== time) c.times.push(time);
      }
      const last = points[points.length - 1];
      if (last) {
        c.caption.textContent = `${product}  ${last[1]}`;
        c.figure.dataset.last = last[1];
      }
      c.figure.dataset.points = String(c.times.length);
    }
    for (const [product, marks] of Object.entries(news.marks)) {
      const c = chartFor(product);
      c.marks.push(...marks);
      c.figure.dataset.marks = String(c.marks.length);
    }
    for (const c of Object.values(charts)) drawMarks(c);
  }

  document.getElementById("chart-feed").addEventListener("htmx:sseBeforeMessage", (event) => {
    event.preventDefault(); // JSON for the charts, not HTML to swap in
    applyChart(JSON.parse(event.detail.data));
  });
})();
