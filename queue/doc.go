// Package queue is outbound's persistent outbound mail queue.
//
// A message's life: the application calls Enqueue, which checks the envelope
// and body and returns only once the message is on stable storage; the queue
// later claims the recipients that are due (writing the lease and the next
// attempt time before any network I/O), hands them to the delivery engine
// grouped by destination, and records each recipient's outcome: delivered,
// deferred until a time computed by package backoff, or failed/expired with a
// delivery status notification queued in the same atomic step.
//
// Storage is behind the [Store] interface. Sub-packages hold the
// implementations (an embedded local-disk store, the default, and a
// PostgreSQL store for many workers on many machines) and queuetest, the
// conformance suite every store runs.
package queue
