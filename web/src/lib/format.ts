export function pct(x: number | null | undefined, digits = 1): string {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  return `${(x * 100).toFixed(digits)}%`;
}

export function num(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  return x.toFixed(digits);
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function count(n: number | null | undefined): string {
  if (n === null || n === undefined) return "—";
  return n.toLocaleString("en-US");
}

export function when(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" });
}

export function duration(start?: string | null, end?: string | null): string {
  if (!start) return "—";
  const a = new Date(start).getTime();
  const b = end ? new Date(end).getTime() : Date.now();
  if (Number.isNaN(a) || Number.isNaN(b)) return "—";
  const s = Math.max(0, Math.round((b - a) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${s % 60} s`;
}

/** A readable name for matrix sources and id kinds. */
export function matrixName(source: string | null | undefined): string {
  if (!source) return "none";
  if (source === "X") return "the main matrix (X)";
  if (source === "raw/X") return "the .raw matrix";
  if (source.startsWith("layers/")) return `the layer "${source.slice(7)}"`;
  return source;
}

export function kindName(kind: string | null | undefined): string {
  switch (kind) {
    case "counts":
    case "raw_counts":
      return "raw integer counts";
    case "lognorm":
    case "log_normalized":
      return "log-normalised values";
    case "scaled":
      return "scaled (z-scored) values";
    case "normalized":
      return "normalised, not logged";
    case "noninteger_counts":
      return "counts with non-integer values";
    case "empty":
      return "no values";
    case "invalid":
      return "invalid values (NaN, infinite or negative)";
    default:
      return kind ?? "unknown";
  }
}

export function idKindName(kind: string | null | undefined): string {
  switch (kind) {
    case "ensembl":
      return "Ensembl gene IDs";
    case "ensembl_versioned":
      return "versioned Ensembl gene IDs (e.g. ENSG….12)";
    case "symbol":
      return "gene symbols";
    case "mixed":
      return "a mix of Ensembl IDs and symbols";
    default:
      return kind ?? "unknown";
  }
}
