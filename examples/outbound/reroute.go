package main

import (
	"context"
	"io"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// rerouter is the queue's Deliverer. It routes every attempt by the
// current settings rather than by the destination stored when the message
// was queued, so that a message queued for MX delivery goes out through a
// --relay given later (and back), instead of failing every attempt until it
// expires: the queue stores each recipient's destination at Enqueue and the
// delivery engine refuses recipients of another destination.
type rerouter struct {
	d *delivery.Deliverer
}

var _ queue.Deliverer = rerouter{}

func (r rerouter) Destination(rcpt string) string { return r.d.Destination(rcpt) }

// Deliver makes one attempt per current destination of msg's recipients:
// normally exactly one, the stored destination itself. Reports of several
// are merged: results in order, the destination unavailable only when every
// part was.
func (r rerouter) Deliver(ctx context.Context, destination string, msg *delivery.Message) (*delivery.Report, error) {
	var order []string
	groups := make(map[string][]delivery.Recipient)
	for _, rc := range msg.Recipients {
		dest := r.d.Destination(rc.Address)
		if _, ok := groups[dest]; !ok {
			order = append(order, dest)
		}
		groups[dest] = append(groups[dest], rc)
	}
	if len(order) == 1 {
		return r.d.Deliver(ctx, order[0], msg)
	}
	// Several destinations share one body, read once per attempt: it
	// must be rewindable (the queue's bodies are files or buffers).
	seeker, _ := msg.Body.(io.Seeker)
	merged := &delivery.Report{Destination: destination, DestinationUnavailable: true}
	for i, dest := range order {
		part := *msg
		part.Recipients = groups[dest]
		if i > 0 {
			if seeker == nil {
				break
			}
			if _, err := seeker.Seek(0, io.SeekStart); err != nil {
				break
			}
		}
		rep, err := r.d.Deliver(ctx, dest, &part)
		if rep == nil {
			for _, rc := range part.Recipients {
				merged.Results = append(merged.Results, delivery.Result{Recipient: rc.Address, Class: delivery.Temporary, Err: err})
			}
			merged.DestinationUnavailable = false
			continue
		}
		merged.Results = append(merged.Results, rep.Results...)
		if !rep.DestinationUnavailable {
			merged.DestinationUnavailable = false
		} else {
			merged.DestinationReply, merged.DestinationStage, merged.DestinationErr = rep.DestinationReply, rep.DestinationStage, rep.DestinationErr
		}
		merged.TLS, merged.Extensions = rep.TLS, rep.Extensions
	}
	return merged, nil
}
