// Package delivery makes one SMTP delivery attempt and classifies every reply,
// per recipient and per destination.
//
// It never retries in-process and never imports package queue: it reports
// what happened, and the queue decides when to try again.
package delivery
