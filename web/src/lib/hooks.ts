import { useCallback, useEffect, useRef, useState } from "react";
import { api, getApiKey, newIdempotencyKey } from "../api/client";
import { navigate } from "./router";

export type Async<T> =
  | { status: "loading"; data?: undefined; error?: undefined }
  | { status: "error"; data?: undefined; error: Error }
  | { status: "ready"; data: T; error?: undefined };

/** Run an async loader when deps change; abortable; `reload()` runs it again. */
export function useAsync<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Async<T> & { reload: () => void } {
  const [state, setState] = useState<Async<T>>({ status: "loading" });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const ctl = new AbortController();
    setState({ status: "loading" });
    load(ctl.signal).then(
      (data) => !ctl.signal.aborted && setState({ status: "ready", data }),
      (error: Error) => !ctl.signal.aborted && setState({ status: "error", error }),
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

/** The API key from localStorage, updated when Settings changes it. */
export function useApiKey(): string {
  const [key, setKey] = useState(getApiKey);
  useEffect(() => {
    const on = () => setKey(getApiKey());
    window.addEventListener("cellfoundry:key", on);
    window.addEventListener("storage", on);
    return () => {
      window.removeEventListener("cellfoundry:key", on);
      window.removeEventListener("storage", on);
    };
  }, []);
  return key;
}

/** Call `fn` every `ms` while `active`; the latest fn is always used. */
export function useInterval(fn: () => void, ms: number, active: boolean): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    if (!active) return;
    const id = window.setInterval(() => ref.current(), ms);
    return () => window.clearInterval(id);
  }, [ms, active]);
}

/** Submit a run, then open the page `to(runId)`; `busy` and `error` describe the attempt.
 * Submitting the same body again after a failure (a lost answer, a proxy error) sends the same
 * Idempotency-Key, so a run the failed attempt did create is answered, not queued twice; a
 * changed body or a submit after a success gets a new key. */
export function useSubmitRun(to: (runId: string) => string) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const attempt = useRef<{ body: string; key: string } | null>(null);
  const submit = async (body: Parameters<typeof api.submit>[0]) => {
    setBusy(true);
    setError(null);
    const json = JSON.stringify(body);
    if (attempt.current?.body !== json) attempt.current = { body: json, key: newIdempotencyKey() };
    try {
      const r = await api.submit(body, attempt.current.key);
      attempt.current = null;
      navigate(to(r.run_id));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, submit };
}
