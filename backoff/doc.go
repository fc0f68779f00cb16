// Package backoff computes when a deferred recipient or destination may be
// tried again.
//
// Everything here is a pure function of persisted state (attempts made, when
// the message arrived, when the last attempt started), so a restart never
// resets or shortens a deferral: the store keeps the state, the [Schedule]
// turns it into a time. RFC 5321 §4.5.4.1: "The sender MUST delay retrying a
// particular destination after one attempt has failed."
package backoff
