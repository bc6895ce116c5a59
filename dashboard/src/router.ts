// Three client routes: `/` (catalog), `/skus/{code}` (detail) and
// `/webhooks` (admins' webhook endpoints). The server answers every one with
// index.html (src/http/dashboard.rs).
//
// A SKU code is one path segment: `encodeURIComponent` leaves the RFC 3986
// unreserved characters (and `!*'()`, which a segment may hold) as they are
// and encodes everything else, `/`, `?`, `#`, `%` and non-ASCII included;
// the server's own URLs (src/http/links.rs) encode the same way.

/** Where the page is: a SKU's detail, the Webhooks page, else the catalog. */
export interface Route {
  sku: string | null;
  /** Only on the Webhooks page. */
  webhooks?: true;
}

/** The Webhooks page (admins). */
export const WEBHOOKS_PATH = "/webhooks";

/** The route of a path, `location.pathname` by default. A segment that is
 * not valid percent-encoding (typed or pasted by hand) is no SKU: the
 * catalog, rather than a page that throws. */
export function currentRoute(pathname: string = location.pathname): Route {
  if (/^\/webhooks\/?$/.test(pathname)) return { sku: null, webhooks: true };
  const match = /^\/skus\/([^/]+)$/.exec(pathname);
  if (!match) return { sku: null };
  try {
    return { sku: decodeURIComponent(match[1]) };
  } catch {
    return { sku: null };
  }
}

/** The path of a SKU's detail view; `currentRoute` reads it back. */
export function skuPath(code: string): string {
  return `/skus/${encodeURIComponent(code)}`;
}

export function navigate(path: string) {
  history.pushState(null, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}
