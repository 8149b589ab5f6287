// One channel held by a client: its own events and state, and the requests that name it.

import { Emitter } from "./emitter.js";
import { HeraldError, RequestTimeout } from "./errors.js";
import type {
  ErrorEvent, HistoryOptions, HistoryReply, Position, PresenceStats, PublishedReply, RequestOptions,
  SubscribedReply, SubscriptionEvents, SubscriptionState, UnsubscribedReply, WhoReply,
} from "./types.js";

/** @internal What a Subscription needs from its client. */
export interface SubscriptionOwner {
  _hold(sub: Subscription<any>): void;
  _position(channel: string): Position | null;
  unsubscribe(channel: string): Promise<UnsubscribedReply>;
  publish(channel: string, data: unknown, event?: string, opts?: RequestOptions): Promise<PublishedReply>;
  history(channel: string, opts?: HistoryOptions): Promise<HistoryReply>;
  presence(channel: string, opts?: RequestOptions): Promise<WhoReply>;
  presenceStats(channel: string, opts?: RequestOptions): Promise<PresenceStats>;
}

interface Waiter {
  resolve(reply: SubscribedReply): void;
  reject(err: HeraldError): void;
}

/**
 * A channel the client holds until `unsubscribe()`: resubscribed (resuming from its last
 * position) after every reconnect. Its state is "subscribing" until the server confirms it on
 * the current connection, then "subscribed"; "unsubscribed" once released or refused.
 *
 * It is also a promise-like of the `subscribed` reply, so `await client.subscribe(ch)` resolves
 * as it always did (keep the returned value, not the awaited one, to use the handle).
 */
export class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> implements PromiseLike<SubscribedReply> {
  readonly channel: string;
  state: SubscriptionState = "subscribing";
  /** The last `subscribed` reply (over SSE: `{type, channel}`). */
  reply: SubscribedReply | null = null;
  private _client: SubscriptionOwner;
  private _waiters: Waiter[] = [];

  /** @internal Made by `client.subscribe(channel)`. */
  constructor(client: SubscriptionOwner, channel: string) {
    super();
    this._client = client;
    this.channel = channel;
  }

  /** The last delivered position (save it to resume a later client with `subscribe(ch, { since })`). */
  get position(): Position | null {
    return this._client._position(this.channel);
  }

  /** Resolves with the `subscribed` reply once the channel is live (now, if it is). */
  ready(timeoutMs?: number): Promise<SubscribedReply> {
    if (this.state === "subscribed" && this.reply) return Promise.resolve(this.reply);
    if (this.state === "unsubscribed") return Promise.reject(new HeraldError(`${this.channel}: not subscribed`));
    return new Promise<SubscribedReply>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject };
      if (timeoutMs != null) {
        const timer = setTimeout(() => {
          this._waiters = this._waiters.filter((w) => w !== waiter);
          reject(new RequestTimeout(`${this.channel}: not subscribed within ${timeoutMs} ms`));
        }, timeoutMs);
        waiter.resolve = (r) => { clearTimeout(timer); resolve(r); };
        waiter.reject = (e) => { clearTimeout(timer); reject(e); };
      }
      this._waiters.push(waiter);
    });
  }

  then<R1 = SubscribedReply, R2 = never>(
    onfulfilled?: ((value: SubscribedReply) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: any) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.ready().then(onfulfilled, onrejected);
  }

  catch<R = never>(onrejected?: ((reason: any) => R | PromiseLike<R>) | null): Promise<SubscribedReply | R> {
    return this.ready().catch(onrejected);
  }

  finally(onfinally?: (() => void) | null): Promise<SubscribedReply> {
    return this.ready().finally(onfinally);
  }

  /** Hold the channel again after `unsubscribe()` (or a refusal). */
  subscribe(): this {
    if (this.state === "unsubscribed") this._client._hold(this);
    return this;
  }

  unsubscribe(): Promise<UnsubscribedReply> {
    return this._client.unsubscribe(this.channel);
  }

  publish(data: T, event?: string, opts?: RequestOptions): Promise<PublishedReply> {
    return this._client.publish(this.channel, data, event, opts);
  }

  history(opts?: HistoryOptions): Promise<HistoryReply<T>> {
    return this._client.history(this.channel, opts) as Promise<HistoryReply<T>>;
  }

  presence(opts?: RequestOptions): Promise<WhoReply> {
    return this._client.presence(this.channel, opts);
  }

  presenceStats(opts?: RequestOptions): Promise<PresenceStats> {
    return this._client.presenceStats(this.channel, opts);
  }

  // ---- called by the client ------------------------------------------------------------
  /** @internal */
  _dispatch<K extends keyof SubscriptionEvents<T>>(type: K, payload: SubscriptionEvents<T>[K]): void {
    this._emit(type, payload);
  }

  /** @internal */
  _setState(state: SubscriptionState): void {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { channel: this.channel, state });
  }

  /** @internal */
  _waiting(): boolean {
    return this._waiters.length > 0;
  }

  /** @internal The channel is live on this connection. */
  _subscribed(reply: SubscribedReply): void {
    this.reply = reply;
    this._setState("subscribed");
    for (const w of this._waiters.splice(0)) w.resolve(reply);
    this._emit("subscribed", reply);
  }

  /** @internal Waiters fail with `err`; with `drop` the subscription ends (refused, unsubscribed). */
  _fail(err: HeraldError, drop: boolean, event?: ErrorEvent): void {
    for (const w of this._waiters.splice(0)) w.reject(err);
    if (event) this._emit("error", event);
    if (drop) {
      this._setState("unsubscribed");
      this._emit("unsubscribed", { type: "unsubscribed", channel: this.channel });
    }
  }
}
