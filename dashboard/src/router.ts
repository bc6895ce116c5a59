// Two client routes: `/` (catalog) and `/skus/{code}` (detail). The server
// answers both with index.html (src/http/dashboard.rs).
//
// A SKU code is one path segment: `encodeURIComponent` leaves the RFC 3986
// unreserved characters (and `!*'()`, which a segment may hold) as they are
// and encodes everything else, `/`, `?`, `#`, `%` and non-ASCII included;
// the server's own URLs (src/http/links.rs) encode the same way.

/** The route of a path, `location.pathname` by default. A segment that is
 * not valid percent-encoding (typed or pasted by hand) is no SKU: the
 * catalog, rather than a page that throws. */
export function currentRoute(pathname: string = location.pathname): { sku: string | null } {
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
