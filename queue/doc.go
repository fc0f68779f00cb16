// Package queue is outbound's persistent outbound mail queue and its
// scheduler.
//
// A message's life: the application calls [Queue.Enqueue], which checks the
// envelope and body and returns only once the message is on stable storage.
// [Queue.Run] (or [Queue.RunOnce]) later claims the recipients that are due,
// writing the lease and the next attempt time before any network I/O; hands
// them to the delivery engine grouped by destination, one transaction per
// message and destination (RFC 5321 §4.5.4.1); and records each recipient's
// outcome: delivered, deferred until a time computed by package backoff, or
// failed/expired with a delivery status notification queued in the same
// atomic step.
//
// Storage is behind the [Store] interface. Sub-packages hold the
// implementations (embedded, the default local-disk store, and postgres,
// for many workers on many machines), queuetest, the conformance suite every
// store runs, and queuemetrics, Prometheus collectors fed by the queue's
// events.
//
// # Scheduling
//
// Run never scans the queue: it asks the store for due work (Store.Claim,
// oldest next attempt first) and sleeps until Store.NextDue, an Enqueue, or
// Config.PollInterval. Limits: Config.Workers attempts in flight,
// Config.MaxConnsPerDestination per destination, Config.DestinationRate
// attempt starts per second per destination. A destination starts with one
// attempt at a time until an attempt reaches it (slow start), so a dead
// destination sees one connection, not many. After a start, the number of
// attempts in flight grows from one to Workers over Config.StartupRamp, so
// a restart after an outage is not a burst at every destination at once.
// When the Store is shared by several processes and implements SlotStore
// (PostgreSQL), every attempt also holds one of the destination's
// cluster-wide connection slots, so the per-destination limits, slow start
// included, hold for the cluster as a whole; work that finds no free slot
// waits for one in the scheduler, without contacting the destination or
// counting against it.
// Work is claimed oldest first across destinations, except that a
// destination for which Run already holds as many waiting leases as may
// run there at once is left out of its claims
// (ClaimParams.ExcludeDestinations): a large backlog for one destination
// at its connection or rate limit does not hold back younger mail for
// others. While such a backlog waits, retries at other destinations may
// start up to Config.PollInterval late (never early): Store.NextDue cannot
// see past the excluded work.
//
// A recipient's destination is fixed at Enqueue (Deliverer.Destination),
// and the store groups and backs off by it. After a routing change (MX
// delivery to or from a relay, another relay) Run asks the Deliverer again
// as it takes each lease: the mail goes where it goes now, under that
// destination's limits and backoff, whose status is recorded under its
// own name (FinishParams.Destinations); the backoff of the stale key is
// cleared. A lease whose recipients now go to several destinations is
// split, one attempt per destination.
//
// # How retries work
//
// A temporary failure (4xx, a lost connection, anything not clearly
// permanent) is never retried at once, nor in the same run: the recipient
// is deferred to the time [backoff.Schedule.Next] computes from its
// persisted attempts, arrival and last attempt. The default schedule waits
// 5 minutes after the first failure and doubles the wait up to one hour,
// adding 0–10% jitter (never subtracting); after 5 days the recipient
// expires. Without jitter, the attempts of a recipient that always fails
// start at:
//
//	#1 +0s       #2 +5m0s     #3 +15m0s    #4 +35m0s    #5 +1h15m0s
//	#6 +2h15m0s  #7 +3h15m0s  #8 +4h15m0s  … one an hour …
//	#123 +119h15m0s  #124 +120h0m0s (the final attempt, at the expiry)
//
// Config.Schedule changes every number; backoff.Schedule.Timeline prints
// the attempts of any schedule.
//
// Replies that state a wait — greylisting ("450 4.2.0 Greylisted, try
// again in 300 seconds") and throttling ("try again in 10 minutes") — are
// retried just after the stated window (delivery/reason), never later than
// the schedule and never sooner than one minute after the reply.
//
// A destination judged unavailable as a whole (no address accepted a
// connection, a 4xx greeting, a 421) is put in its own backoff
// (Config.DestinationSchedule): no message is sent there until it expires,
// then a single probe goes first, and only its success releases the rest.
// So 10,000 messages waiting for a dead destination cost it as many
// connections as one message would (RFC 5321 §4.5.4.1: "A client SHOULD
// keep a list of hosts it cannot reach").
//
// A crash mid-attempt leaves the recipient due when its lease ends
// (Config.LeaseFor after the claim, at least the minimum backoff), never at
// restart.
//
// # Notifications
//
// A permanent failure (5xx) or an expiry produces one RFC 3464 notification
// per attempt, covering every recipient that failed in it, sent from the
// null sender to the envelope sender and queued atomically with the
// failure. A delay warning ("delayed", with Will-Retry-Until from the real
// schedule) is sent once, at the first deferral after
// backoff.Schedule.DelayWarning (4 hours by default). NOTIFY is honoured
// (NEVER, FAILURE, DELAY; unset means failures and delays). A message from
// the null sender never gets a notification (RFC 5321 §4.5.5), so a
// notification never causes another. RET=FULL returns the whole original
// up to Config.MaxReturnSize, otherwise its header.
//
// # Watching it
//
// Every attempt and recipient outcome is an [Event] for Config.Observer,
// and a log record for Config.Logger (log/slog). Package queuemetrics turns
// the events into Prometheus metrics.
package queue
