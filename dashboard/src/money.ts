// Money is a decimal string from the server; it is formatted per currency and
// never turned into arithmetic beyond display (API.md: no float touches a price).

const formatters = new Map<string, Intl.NumberFormat>();

function formatter(currency: string, locale?: string): Intl.NumberFormat {
  const key = `${locale ?? ""}|${currency}`;
  let f = formatters.get(key);
  if (!f) {
    try {
      // The currency's own minor units: JPY 0 decimals, GBP 2, KWD 3.
      f = new Intl.NumberFormat(locale, { style: "currency", currency });
    } catch {
      f = new Intl.NumberFormat(locale, { minimumFractionDigits: 2 });
    }
    formatters.set(key, f);
  }
  return f;
}

/** "2.55" GBP -> "£2.55"; "1980" JPY -> "¥1,980". */
export function formatMoney(price: string, currency: string, locale?: string): string {
  const n = Number(price);
  if (!Number.isFinite(n)) return `${price} ${currency}`;
  return formatter(currency, locale).format(n);
}

/** Digits after the decimal point the currency uses (JPY 0, GBP 2). */
export function minorDigits(currency: string): number {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions()
      .maximumFractionDigits ?? 2;
  } catch {
    return 2;
  }
}

/** Compares two decimal strings numerically: -1, 0 or 1. */
export function compareDecimal(a: string, b: string): number {
  const x = Number(a);
  const y = Number(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
