package delivery

// Classify says what a reply received at stage means for a recipient, if
// that reply were the last word of the attempt. It is the pure core of the
// table in the package documentation:
//
//   - 2xx to the final dot is Delivered (RFC 5321 §4.2.5). A 2xx at any
//     other stage is not an outcome yet and is Temporary.
//   - 4xx is Temporary (§4.2.1), 421 included (§3.8).
//   - 5xx is Permanent at MAIL, RCPT, DATA, the body and the final dot, and
//     for the engine's own decisions at the resolve stage (null MX, no such
//     domain). Two exceptions: 552 to RCPT is Temporary, because
//     §4.5.3.1.10 says clients should treat it as "too many recipients";
//     and a 5xx at connect, greeting, EHLO, STARTTLS or AUTH is about the
//     host, not the recipient, so it is Temporary (Postfix's
//     smtp_skip_5xx_greeting; the engine tries the next host).
//   - Anything else (no reply, 1xx, 3xx, codes outside 200–599) is
//     Temporary: an outcome nobody understood is retried, never dropped.
//
// The enhanced code refines the reply for reporting but never changes its
// class (RFC 3463 §2: the class digits must agree).
func Classify(stage Stage, r Reply) Class {
	switch {
	case r.Code >= 200 && r.Code < 300:
		if stage == StageEndData {
			return Delivered
		}
		return Temporary
	case r.Code >= 500 && r.Code < 600:
		switch stage {
		case StageRCPT:
			if r.Code == 552 {
				return Temporary
			}
			return Permanent
		case StageResolve, StageMAIL, StageDATA, StageBody, StageEndData:
			return Permanent
		}
		return Temporary
	}
	return Temporary
}

// closesConnection reports whether a reply ends the session: 421 is the
// server saying it is closing the channel (RFC 5321 §3.8), and a 2xx or 3xx
// where go-smtp expected another code means the two sides are out of step.
func closesConnection(r Reply) bool {
	return r.Code == 421 || r.Code < 400
}

// tooManyRecipients reports whether a RCPT reply means "no more recipients
// in this transaction" (RFC 5321 §4.5.3.1.10: 452, or 552 from older
// servers), given that accepted recipients are already in it. With none
// accepted, the transaction cannot make progress and the reply is an
// ordinary temporary failure for that recipient.
func tooManyRecipients(r Reply, accepted int) bool {
	if accepted == 0 {
		return false
	}
	if r.Code == 552 {
		// RFC 821's code for the same condition; 552 5.2.2 is a full
		// mailbox instead.
		return r.Enhanced.IsZero() || r.Enhanced == EnhancedCode{5, 5, 3}
	}
	return r.Code == 452
}
