import { describeChange } from "../changes";
import type { SkuEvent } from "../types";
import { formatTime } from "./Catalog";

/** Most changes listed; the charts keep the whole series. */
const SHOWN = 20;

/** The SKU's changes that arrived live since its page opened, newest first. */
export function Changes({ events, code, currency }: { events: SkuEvent[]; code: string; currency: string }) {
  const mine = events.filter((e) => e.sku === code);
  const shown = mine.slice(-SHOWN).reverse();
  return (
    <section className="card changes" aria-labelledby="changes-title">
      <h2 id="changes-title">Live changes</h2>
      {shown.length === 0 ? (
        <p className="muted">None since this page opened.</p>
      ) : (
        <ol className="change-list" data-testid="changes">
          {shown.map((e) => (
            <li key={e.event_id} data-field={e.field}>
              <time dateTime={e.at}>{formatTime(e.at)}</time> {describeChange(e, currency)}
              {e.actor && <span className="muted"> by {e.actor}</span>}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
