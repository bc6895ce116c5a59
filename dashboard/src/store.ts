// A tiny external store around the pure reducer, read by React through
// useSyncExternalStore (one subscription, no context re-render cascade).

import { useSyncExternalStore } from "react";
import { type Action, type LiveState, initialState, reduce } from "./state";

let state: LiveState = initialState();
const listeners = new Set<() => void>();

export function dispatch(action: Action) {
  const next = reduce(state, action);
  if (next === state) return;
  state = next;
  for (const listener of listeners) listener();
}

export function getState(): LiveState {
  return state;
}

function subscribe(listener: () => void) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function useLive<T>(select: (s: LiveState) => T): T {
  return useSyncExternalStore(subscribe, () => select(state));
}
