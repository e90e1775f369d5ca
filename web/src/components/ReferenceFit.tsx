// How well the cells fit the model's reference: marker overlap and out-of-reference share per type.
import type { ResultSummary } from "../api/types";
import { markerRows, outOfReferenceRows } from "../lib/evidence";
import { count, num, pct } from "../lib/format";
import { Card } from "./ui";

export function ReferenceFit({ summary }: { summary: ResultSummary }) {
  const oor = outOfReferenceRows(summary);
  const markers = markerRows(summary);
  const mo = summary.marker_overlap;
  if (!oor.length && !markers.length) return null;
  return (
    <Card title="Fit to the model's reference">
      <div className="grid grid-2">
        {oor.length > 0 && (
          <div className="table-wrap">
            <p className="small">{pct(summary.out_of_reference?.share)} of all cells ({count(summary.out_of_reference?.n_cells)}) are out of reference{summary.out_of_reference?.threshold != null ? ` (distance above ${num(summary.out_of_reference.threshold, 2)})` : ""}.</p>
            <table aria-label="Out-of-reference share per predicted type" data-testid="oor-by-type">
              <thead><tr><th>Predicted type</th><th className="num">Cells</th><th className="num">Out of reference</th></tr></thead>
              <tbody>{oor.map((r) => <tr key={r.type}><td>{r.type}</td><td className="num">{count(r.n_cells)}</td><td className="num">{pct(r.share)}</td></tr>)}</tbody>
            </table>
          </div>
        )}
        {markers.length > 0 && (
          <div className="table-wrap">
            <p className="small">Share of each type's top {mo?.n_markers} markers in these cells that are the reference's markers of the class{mo?.mean_overlap != null ? `; mean ${pct(mo.mean_overlap)}` : ""}{mo?.expected_by_chance != null ? ` (by chance: ${pct(mo.expected_by_chance)})` : ""}.</p>
            <table aria-label="Marker overlap per predicted type" data-testid="marker-overlap">
              <thead><tr><th>Predicted type</th><th className="num">Cells</th><th className="num">Overlap</th><th>Shared markers</th></tr></thead>
              <tbody>{markers.map((r) => (
                <tr key={r.type}><td>{r.type}</td><td className="num">{count(r.n_cells)}</td><td className="num">{r.overlap == null ? "too few cells" : pct(r.overlap)}</td><td className="small">{(r.shared_markers ?? []).join(", ") || "—"}</td></tr>
              ))}</tbody>
            </table>
          </div>
        )}
      </div>
    </Card>
  );
}
