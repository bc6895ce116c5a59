import { useEffect, useRef } from "react";
import uPlot from "uplot";

// uPlot: a canvas chart of ~50 KB that redraws thousands of points in a few
// milliseconds and takes appended data with setData, which is what a chart
// extended by live events needs (README, "Dashboard").

export function Chart({
  title,
  xs,
  ys,
  format,
}: {
  title: string;
  /** Unix seconds, ascending. */
  xs: number[];
  ys: number[];
  format: (v: number) => string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const formatRef = useRef(format);
  formatRef.current = format;

  useEffect(() => {
    const el = box.current!;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [
        {
          stroke: "#333",
          grid: { stroke: "#e3e6ea" },
          space: 70,
          // One line per tick, with the precision the visible range needs
          // (uPlot's default two-line labels collide on narrow charts).
          values: (u, splits) => {
            const range = (u.scales.x.max ?? 0) - (u.scales.x.min ?? 0);
            const options: Intl.DateTimeFormatOptions =
              range > 2 * 86400
                ? { month: "short", day: "numeric" }
                : range > 600
                  ? { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }
                  : { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
            return splits.map((s) => new Date(s * 1000).toLocaleString(undefined, options));
          },
        },
        {
          stroke: "#333",
          grid: { stroke: "#e3e6ea" },
          size: 70,
          values: (_u, splits) => splits.map((v) => formatRef.current(v)),
        },
      ],
      series: [
        {},
        {
          label: title,
          stroke: "#0b5cad",
          width: 2,
          fill: "rgba(11, 92, 173, 0.08)",
          paths: uPlot.paths.stepped!({ align: 1 }),
          points: { show: false },
        },
      ],
    };
    plot.current = new uPlot(opts, [[], []], el);
    const observer = new ResizeObserver(() => {
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height: 220 });
    });
    observer.observe(el);
    return () => {
      observer.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [title]);

  useEffect(() => {
    plot.current?.setData([xs, ys]);
  }, [xs, ys]);

  const last = ys.length ? format(ys[ys.length - 1]) : "no data";
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={`${title} chart, ${xs.length} points, latest ${last}`} />
    </figure>
  );
}
