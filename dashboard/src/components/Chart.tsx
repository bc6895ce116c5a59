import { useEffect, useRef, type ReactNode } from "react";
import uPlot from "uplot";

// uPlot: a canvas chart of ~50 KB that redraws thousands of points in a few
// milliseconds and takes appended data with setData, which is what a chart
// extended by live events needs (README, "Dashboard").

export function Chart({
  title,
  xs,
  ys,
  format,
  projected,
  legend,
}: {
  title: string;
  /** Unix seconds, ascending. */
  xs: number[];
  /** A step series; null where it has no value (past its last point). */
  ys: (number | null)[];
  format: (v: number) => string;
  /** A second series, drawn as a dashed straight line across its nulls (the
   * stock chart's projection to a stock-out, cover.ts). Given (even all
   * null) or not for the chart's whole life: it fixes the chart's series. */
  projected?: (number | null)[];
  /** Shown under the chart (what the dashed line is). */
  legend?: ReactNode;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const formatRef = useRef(format);
  formatRef.current = format;
  const hasProjection = projected !== undefined;

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
          values: (u, splits, _axis, _space, increment) => {
            const range = (u.scales.x.max ?? 0) - (u.scales.x.min ?? 0);
            const time = (s: number, options: Intl.DateTimeFormatOptions) =>
              new Date(s * 1000).toLocaleString(undefined, { hourCycle: "h23", ...options });
            const hm = { hour: "2-digit", minute: "2-digit" } as const;
            if (range > 2 * 86400 && increment < 86400) {
              // Ticks under a day apart over days (a stock-out projected a
              // few days out): the date at midnight, the time at the others.
              return splits.map((s) => {
                const d = new Date(s * 1000);
                return d.getHours() === 0 && d.getMinutes() === 0 ? time(s, { month: "short", day: "numeric" }) : time(s, hm);
              });
            }
            const options: Intl.DateTimeFormatOptions =
              range > 2 * 86400 ? { month: "short", day: "numeric" } : range > 600 ? hm : { ...hm, second: "2-digit" };
            return splits.map((s) => time(s, options));
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
        ...(hasProjection
          ? [
              {
                label: "Projected",
                stroke: "#a4161a",
                width: 2,
                dash: [6, 4],
                // Two points with the step series' x values between them.
                spanGaps: true,
                points: { show: false },
              },
            ]
          : []),
      ],
    };
    plot.current = new uPlot(opts, hasProjection ? [[], [], []] : [[], []], el);
    const observer = new ResizeObserver(() => {
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height: 220 });
    });
    observer.observe(el);
    return () => {
      observer.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [title, hasProjection]);

  useEffect(() => {
    plot.current?.setData(projected ? [xs, ys, projected] : [xs, ys]);
  }, [xs, ys, projected]);

  const values = ys.filter((y): y is number => y !== null);
  const last = values.length ? format(values[values.length - 1]) : "no data";
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={`${title} chart, ${values.length} points, latest ${last}`} />
      {legend}
    </figure>
  );
}
