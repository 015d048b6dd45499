package actors

import (
	"time"

	"charla"
)

// SendLimiter is the chat rate limit the conn actors share with the HTTP
// edge (ratelimit.Registry): one bucket per user across all of
// that user's connections and transports, which no single conn actor could
// hold. Its methods never block: they take a token or refuse at once.
type SendLimiter interface {
	// AllowSend takes one token of user's chat bucket; without one it
	// returns false and how long until one is back.
	AllowSend(user string) (ok bool, retryAfter time.Duration)
	// FloodLimit is how many refused sends one connection may collect
	// within window before it is closed with 4029 (0: never).
	FloodLimit() (refusals int, window time.Duration)
	// Now is the limiter's clock, which the flood window is measured on.
	Now() time.Time
}

// ConnOption adjusts one connection at Connect.
type ConnOption func(*conn)

// Unlimited exempts the connection from the send limit: the edge passes it
// for clients on the rate-limit allow-list.
func Unlimited() ConnOption { return func(c *conn) { c.unlimited = true } }

// sendLimited applies the chat limit to a send frame. It answers a refused
// send with rate_limited and retry_after_ms, the connection staying open;
// a connection that keeps sending far past its limit (more refusals within
// the limiter's window than its FloodLimit) is closed with 4029, since
// answering a flood costs the engine as much as serving it.
func (c *conn) sendLimited(ref string) bool {
	lim := c.deps.limiter
	if lim == nil || c.unlimited {
		return false
	}
	ok, wait := lim.AllowSend(c.user.ID)
	if ok {
		return false
	}
	refusals, window := lim.FloodLimit()
	now := lim.Now()
	if now.Sub(c.refusedSince) >= window {
		c.refused, c.refusedSince = 0, now
	}
	c.refused++
	if refusals > 0 && c.refused > refusals {
		c.deps.log.Info().Str("conn", c.id).Str("user", c.user.ID).Int("refused", c.refused).Dur("window", window).Msg("closing a flooding connection")
		c.close(charla.DisconnectRateLimited)
		return true
	}
	err := charla.Errorf(charla.CodeRateLimited, "too many messages; retry in %s", wait.Round(time.Millisecond))
	err.RetryAfter = wait
	c.reply(nil, ref, err)
	return true
}

// inFlightRetry is the retry_after_ms of a send refused by the in-flight
// cap: a group commit takes milliseconds, so by then acks have made room.
const inFlightRetry = 100 * time.Millisecond

// tooManyInFlight refuses a send when the connection already has
// MaxSendsInFlight sends awaiting their answer. It bounds what one
// connection can have answered at once (a shutdown answers every send in
// flight together) below its outbound queue, which would otherwise close
// it as a slow consumer (4008) instead of 1012. The refusal is the one a
// client already handles, rate_limited with retry_after_ms: resend the same
// client_msg_id later. It takes no chat token and does not count towards
// the 4029 flood rule: the client is ahead of the engine, not over its
// limit.
func (c *conn) tooManyInFlight(ref string) bool {
	limit := c.deps.cfg.MaxSendsInFlight
	if limit <= 0 || c.sends < limit {
		return false
	}
	err := charla.Errorf(charla.CodeRateLimited, "%d sends on this connection await their ack; wait for acks, then resend", limit)
	err.RetryAfter = inFlightRetry
	c.reply(nil, ref, err)
	return true
}
