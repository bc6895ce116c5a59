// Two client routes: `/` (catalog) and `/skus/{code}` (detail). The server
// answers both with index.html (src/http/dashboard.rs).

export function currentRoute(): { sku: string | null } {
  const match = /^\/skus\/(.+)$/.exec(location.pathname);
  return { sku: match ? decodeURIComponent(match[1]) : null };
}

export function skuPath(code: string): string {
  return `/skus/${encodeURIComponent(code)}`;
}

export function navigate(path: string) {
  history.pushState(null, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}
