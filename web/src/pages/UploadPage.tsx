import { useRef, useState } from "react";
import { ApiError, api, uploadFile } from "../api/client";
import type { Dataset, Model } from "../api/types";
import { ReportView } from "../components/ReportView";
import { Alert, Button, Card, ErrorView, NeedKey, Progress } from "../components/ui";
import { rememberDataset, recentDatasets } from "../lib/datasets";
import { bytes, count } from "../lib/format";
import { useApiKey, useAsync } from "../lib/hooks";

const ACCEPT = ".h5ad,.h5,.csv,.csv.gz,.tsv";

type Phase =
  | { kind: "idle" }
  | { kind: "uploading"; file: File; fraction: number }
  | { kind: "done"; dataset: Dataset }
  | { kind: "error"; error: unknown; file: File };

export function UploadPage() {
  const key = useApiKey();
  const [phase, setPhase] = useState<Phase>({ kind: "idle" });
  const [dragging, setDragging] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  const abortRef = useRef<(() => void) | null>(null);
  const models = useAsync<Model[]>((s) => api.models(s), []);

  if (!key) return (<><Head /><NeedKey what="Uploaded datasets" /></>);

  const start = (file: File) => {
    setPhase({ kind: "uploading", file, fraction: 0 });
    const { promise, abort } = uploadFile(file, (fraction) =>
      setPhase((p) => (p.kind === "uploading" ? { ...p, fraction } : p)),
    );
    abortRef.current = abort;
    promise.then(
      (dataset) => {
        rememberDataset(dataset);
        setPhase({ kind: "done", dataset });
      },
      (error) => setPhase({ kind: "error", error, file }),
    );
  };

  const onFiles = (files: FileList | null) => {
    if (files && files.length > 0) start(files[0]);
  };

  const blocked = phase.kind === "done" && phase.dataset.report.messages.some((m) => m.level === "error");

  return (
    <>
      <Head />
      <Card title="1. Choose a file">
        <div
          className={`dropzone ${dragging ? "dragging" : ""}`}
          role="button"
          tabIndex={0}
          aria-label="Drop a dataset file here, or press Enter to choose one"
          data-testid="dropzone"
          onClick={() => input.current?.click()}
          onKeyDown={(e) => {
            if (e.key === "Enter" || e.key === " ") {
              e.preventDefault();
              input.current?.click();
            }
          }}
          onDragOver={(e) => { e.preventDefault(); setDragging(true); }}
          onDragLeave={() => setDragging(false)}
          onDrop={(e) => { e.preventDefault(); setDragging(false); onFiles(e.dataTransfer.files); }}
        >
          <p><strong>Drag and drop</strong> an <code>.h5ad</code>, 10x <code>.h5</code> or <code>.csv</code> file here</p>
          <p className="muted">or click / press Enter to browse. The same file uploaded twice is stored once.</p>
        </div>
        <label htmlFor="file-input" className="small muted" style={{ display: "block", marginTop: 8 }}>
          Or pick a file:
        </label>
        <input id="file-input" ref={input} type="file" accept={ACCEPT} onChange={(e) => onFiles(e.target.files)}
          disabled={phase.kind === "uploading"} data-testid="file-input" />
      </Card>

      {phase.kind === "uploading" && (
        <Card title="2. Uploading">
          <p>{phase.file.name} · {bytes(phase.file.size)}</p>
          <Progress value={phase.fraction * 100} label="Upload progress" />
          <div className="row spread" style={{ marginTop: 8 }}>
            <span className="small muted" aria-live="polite">
              {phase.fraction < 1 ? `${Math.round(phase.fraction * 100)}% sent` : "Sent — the service is reading and checking the file…"}
            </span>
            <Button variant="secondary" onClick={() => abortRef.current?.()}>Cancel upload</Button>
          </div>
        </Card>
      )}

      {phase.kind === "error" && (
        <Card title="2. Upload failed">
          <ErrorView error={phase.error} title={`Could not use ${phase.file.name}`} onRetry={() => start(phase.file)} />
          {phase.error instanceof ApiError && phase.error.status === 413 && (
            <Alert tone="info">The file is larger than the service accepts. Ask the administrator to raise the upload limit.</Alert>
          )}
        </Card>
      )}

      {phase.kind === "done" && (
        <Card
          title={`2. Validation report — ${phase.dataset.filename}`}
          actions={
            <Button
              disabled={blocked}
              title={blocked ? "Fix the blocking problems above first" : undefined}
              onClick={() => { window.location.hash = `#/new?dataset=${encodeURIComponent(phase.dataset.id)}`; }}
            >
              Start a run with this data
            </Button>
          }
        >
          <p className="small muted">Dataset id <span className="mono" data-testid="dataset-id">{phase.dataset.id}</span>
            {phase.dataset.size_bytes ? ` · ${bytes(phase.dataset.size_bytes)}` : ""}</p>
          {blocked && <Alert tone="error" title="Submission is blocked">This file has blocking problems (listed below); fix them and upload again.</Alert>}
          <ReportView report={phase.dataset.report} models={models.data} />
        </Card>
      )}

      {phase.kind === "idle" && <RecentUploads />}
    </>
  );
}

function Head() {
  return (
    <div className="page-head">
      <h1>Upload data</h1>
      <p>Upload a dataset; it is checked at once and you see what was found, which models can read it, and what to fix.</p>
    </div>
  );
}

function RecentUploads() {
  const list = recentDatasets();
  if (!list.length) return null;
  return (
    <Card title="Uploaded from this browser">
      <table>
        <thead><tr><th>File</th><th className="num">Cells</th><th className="num">Genes</th><th>Id</th><th /></tr></thead>
        <tbody>
          {list.map((d) => (
            <tr key={d.id}>
              <td>{d.filename}</td>
              <td className="num">{count(d.n_cells)}</td>
              <td className="num">{count(d.n_genes)}</td>
              <td className="mono">{d.id}</td>
              <td><a href={`#/new?dataset=${encodeURIComponent(d.id)}`}>New run</a></td>
            </tr>
          ))}
        </tbody>
      </table>
    </Card>
  );
}
