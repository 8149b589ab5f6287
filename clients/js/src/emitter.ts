// A small typed event emitter: `on`/`off`/`once` checked against a map from event name to payload.

type Listener<P> = (payload: P) => void;

export class Emitter<M extends object> {
  private _listeners = new Map<keyof M, Set<Listener<any>>>();

  /** Call `fn` with every `type` event until `off`. */
  on<K extends keyof M>(type: K, fn: Listener<M[K]>): this {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return this;
  }

  off<K extends keyof M>(type: K, fn: Listener<M[K]>): this {
    const set = this._listeners.get(type);
    if (set) for (const l of set) if (l === fn || (l as { _fn?: unknown })._fn === fn) set.delete(l);
    return this;
  }

  /** Call `fn` with the next `type` event only (`off(type, fn)` cancels it). */
  once<K extends keyof M>(type: K, fn: Listener<M[K]>): this {
    const wrapper = Object.assign((p: M[K]) => { this.off(type, wrapper); fn(p); }, { _fn: fn });
    return this.on(type, wrapper);
  }

  protected _emit<K extends keyof M>(type: K, payload: M[K]): void {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      // A throwing listener must not break the client: rethrow it outside our stack.
      try { fn(payload); } catch (err) { queueMicrotask(() => { throw err; }); }
    }
  }
}
