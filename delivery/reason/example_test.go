package reason_test

import (
	"fmt"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/reason"
)

func ExampleClassify() {
	for _, r := range []delivery.Reply{
		{Code: 451, Enhanced: delivery.EnhancedCode{4, 7, 1}, Text: "Greylisting in action, please come back in 00:05:00"},
		{Code: 421, Enhanced: delivery.EnhancedCode{4, 7, 0}, Text: "[TSS04] Messages from 192.0.2.1 temporarily deferred due to user complaints"},
		{Code: 550, Enhanced: delivery.EnhancedCode{5, 7, 1}, Text: "User temporarily locked. Please try again in 5 minutes"},
	} {
		rs := reason.Classify(r)
		fmt.Printf("%s: wait %v, retryable %v\n", rs.Class, rs.Wait, rs.Retryable())
	}
	// Output:
	// greylist: wait 5m0s, retryable true
	// reputation_block: wait 0s, retryable true
	// policy_perm: wait 5m0s, retryable false
}

// The scheduler computes the regular next attempt (for example with
// backoff.Schedule.Next) and lets a stated wait bring it forward.
func ExampleReason_RetryAt() {
	last := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	normal := last.Add(time.Hour) // what the schedule says

	greylisted := reason.Classify(delivery.Reply{Code: 450, Enhanced: delivery.EnhancedCode{4, 2, 0},
		Text: "<bob@example.org>: Recipient address rejected: Greylisted for 300 seconds"})
	fmt.Println(greylisted.RetryAt(last, normal).Format("15:04:05"))

	busy := reason.Classify(delivery.Reply{Code: 421, Text: "Too much load; please try again later."})
	fmt.Println(busy.RetryAt(last, normal).Format("15:04:05"))
	// Output:
	// 12:05:30
	// 13:00:00
}
