// Small shadcn/ui-style building blocks written with plain CSS (see styles.css).
import type { ButtonHTMLAttributes, ReactNode } from "react";
import { ApiError } from "../api/client";

type Variant = "primary" | "secondary" | "ghost" | "danger";

export function Button({
  variant = "primary",
  className = "",
  ...rest
}: ButtonHTMLAttributes<HTMLButtonElement> & { variant?: Variant }) {
  return <button type="button" className={`btn btn-${variant} ${className}`} {...rest} />;
}

export function Card({ title, children, actions, className = "", id }: {
  title?: ReactNode; children: ReactNode; actions?: ReactNode; className?: string; id?: string;
}) {
  return (
    <section className={`card ${className}`} aria-labelledby={id && title ? `${id}-title` : undefined} id={id}>
      {(title || actions) && (
        <header className="card-header">
          {title && <h2 className="card-title" id={id ? `${id}-title` : undefined}>{title}</h2>}
          {actions && <div className="card-actions">{actions}</div>}
        </header>
      )}
      <div className="card-body">{children}</div>
    </section>
  );
}

export function Badge({ tone = "neutral", children }: { tone?: "neutral" | "ok" | "warn" | "error" | "info"; children: ReactNode }) {
  return <span className={`badge badge-${tone}`}>{children}</span>;
}

export function Progress({ value, label, tone = "info" }: { value: number; label: string; tone?: "info" | "ok" | "warn" | "error" }) {
  const v = Math.max(0, Math.min(100, value));
  return (
    <div className={`progress progress-${tone}`} role="progressbar" aria-label={label}
      aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(v)}>
      <div className="progress-bar" style={{ width: `${v}%` }} />
    </div>
  );
}

export function Alert({ tone = "info", title, children }: { tone?: "info" | "warn" | "error" | "ok"; title?: ReactNode; children?: ReactNode }) {
  return (
    <div className={`alert alert-${tone}`} role={tone === "error" ? "alert" : "status"}>
      {title && <div className="alert-title">{title}</div>}
      {children && <div className="alert-body">{children}</div>}
    </div>
  );
}

export function Spinner({ label = "Loading…" }: { label?: string }) {
  return (
    <div className="loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" />
      <span>{label}</span>
    </div>
  );
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty">
      <div className="empty-title">{title}</div>
      {children && <div className="empty-body">{children}</div>}
    </div>
  );
}

/** An error with the service's message and fix hint, and an optional retry. */
export function ErrorView({ error, onRetry, title }: { error: unknown; onRetry?: () => void; title?: string }) {
  const e = error as Error;
  const hint = e instanceof ApiError ? e.hint : null;
  const needsKey = e instanceof ApiError && e.status === 401;
  const onSettings = window.location.hash.startsWith("#/settings");
  return (
    <Alert tone="error" title={title ?? (needsKey ? "A valid API key is needed" : "Something went wrong")}>
      <p className="error-message">{e?.message ?? String(error)}</p>
      {hint && <p className="hint"><strong>Fix:</strong> {hint}</p>}
      <div className="row gap">
        {needsKey && !onSettings && <a className="btn btn-secondary" href="#/settings">Open Settings</a>}
        {onRetry && <Button variant="secondary" onClick={onRetry}>Try again</Button>}
      </div>
    </Alert>
  );
}

export function Field({ label, htmlFor, help, children }: { label: string; htmlFor: string; help?: ReactNode; children: ReactNode }) {
  return (
    <div className="field">
      <label htmlFor={htmlFor}>{label}</label>
      {children}
      {help && <div className="field-help" id={`${htmlFor}-help`}>{help}</div>}
    </div>
  );
}

export function Pager({ offset, limit, total, onChange, label }: {
  offset: number; limit: number; total: number; onChange: (offset: number) => void; label: string;
}) {
  const page = Math.floor(offset / limit) + 1;
  const pages = Math.max(1, Math.ceil(total / limit));
  return (
    <nav className="pager" aria-label={label}>
      <Button variant="secondary" disabled={offset <= 0} onClick={() => onChange(Math.max(0, offset - limit))}>
        Previous
      </Button>
      <span aria-live="polite">Page {page} of {pages} · {total.toLocaleString("en-US")} total</span>
      <Button variant="secondary" disabled={offset + limit >= total} onClick={() => onChange(offset + limit)}>
        Next
      </Button>
    </nav>
  );
}

export function Stat({ label, value, hint }: { label: string; value: ReactNode; hint?: string }) {
  return (
    <div className="stat">
      <div className="stat-label">{label}</div>
      <div className="stat-value">{value}</div>
      {hint && <div className="stat-hint">{hint}</div>}
    </div>
  );
}

export function NeedKey({ what }: { what: string }) {
  return (
    <Empty title="An API key is needed">
      <p>{what} belong to your account, so this page needs your API key.</p>
      <p>Run <code>cellfoundry keys create NAME</code> on the server (or copy the key <code>cellfoundry serve</code> printed at start-up), then enter it in Settings.</p>
      <a className="btn btn-primary" href="#/settings">Open Settings</a>
    </Empty>
  );
}
