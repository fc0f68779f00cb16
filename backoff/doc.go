// Package backoff computes when a deferred recipient or destination may be
// tried again.
//
// Everything here is a pure function of persisted state (attempts made, when
// the message arrived, when the last attempt started), so a restart never
// resets or shortens a deferral: the store keeps the [State], the [Schedule]
// turns it into a time. RFC 5321 §4.5.4.1: "The sender MUST delay retrying a
// particular destination after one attempt has failed."
//
// # Defaults and their sources
//
// The zero Schedule is Postfix-like:
//
//	MinBackoff    5m   Postfix minimal_backoff_time (300s)
//	MaxBackoff    1h   Postfix maximal_backoff_time (4000s); RFC 5321 §4.5.4.1
//	Multiplier    2    Postfix doubles (next delay = message age, clamped)
//	Jitter        0.1  up to +10%, added, never subtracted
//	MaxLifetime   5d   RFC 5321 §4.5.4.1 "at least 4-5 days"; Postfix maximal_queue_lifetime
//	DelayWarning  4h   sendmail Timeout.queuewarn
//
// The interval after n failed attempts is MinBackoff × Multiplier^(n-1),
// capped at MaxBackoff. It is computed by replaying a
// github.com/cenkalti/backoff/v4 ExponentialBackOff built without
// randomisation, elapsed-time limit or wall clock: that type keeps its state
// in memory, so it is used only as a formula and never for waiting
// (backoff.Retry would reset on every restart). The jitter is a deterministic
// function of (State.Seed, State.Attempts), so Next gives the same answer
// before and after a restart, and it only ever lengthens an interval.
//
// # Expiry without a dead tail
//
// A recipient expires at Arrived + MaxLifetime. When the next retry would
// fall after that, Next schedules one final attempt at exactly the expiry
// instead of giving up early. KumoMTA's 7-day max_age gives up after about
// 3.5 days because it expires a message as soon as its next retry would be
// late; here the whole lifetime is used. The exception: an attempt is never
// started sooner than MinBackoff after the previous one, so if the previous
// attempt was already within MinBackoff of the expiry, it was the final one.
//
// With the defaults and every attempt failing, [Schedule.Timeline] gives
// 124 attempts (un-jittered offsets from arrival):
//
//	#1 +0s  #2 +5m  #3 +15m  #4 +35m  #5 +1h15m  #6 +2h15m  #7 +3h15m
//	… one attempt every hour …
//	#122 +118h15m  #123 +119h15m  #124 +120h (= 5 days: final attempt, then bounce)
//
// A delay DSN is due 4 hours after arrival ([Schedule.DelayWarningAt]).
//
// [Clock] is the time seam of the whole module: production code uses
// [System], tests a fake clock.
package backoff
