package actors

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/wire"
)

// maxSKUBytes bounds a SKU in a request: real ones are short codes, and the
// SKU travels into a SOAP envelope and a cache key.
const maxSKUBytes = 128

// onInventoryFrame handles the inventory bridge's client frames: inventory
// and reserve go to the soap actor (which answers this conn, or the user's
// connections with job frames), job is answered from the job table, and
// invalidate drops a SKU from the cache.
func (c *conn) onInventoryFrame(ctx actor.Context, f wire.Frame) {
	staff := c.user.Role == charla.RoleAgent || c.user.Role == charla.RoleAdmin
	switch f.Type {
	case wire.TypeJob:
		j, ok := c.deps.bridge.jobs.get(f.JobID)
		// Another user's job is as unknown as a missing one: ids are not to
		// be probed.
		if !ok || j.user.ID == "" || (j.user.ID != c.user.ID && c.user.Role != charla.RoleAdmin) {
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeNotFound, "no job %q (finished jobs are kept for %s)", f.JobID, c.deps.cfg.SOAP.JobRetention))
			return
		}
		c.enqueue(j.frame(f.Ref))
		return
	case wire.TypeReserve:
		if !staff {
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeForbidden, "only agents and admins may reserve stock"))
			return
		}
		if f.Quantity < 1 {
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeBadRequest, "reserve needs a quantity of 1 or more"))
			return
		}
		if len(f.ReservationID) > maxSKUBytes {
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeBadRequest, "reservation_id is longer than %d bytes", maxSKUBytes))
			return
		}
	case wire.TypeInvalidate:
		if c.user.Role != charla.RoleAdmin {
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeForbidden, "only admins may invalidate the inventory cache"))
			return
		}
	}
	if f.SKU == "" || len(f.SKU) > maxSKUBytes {
		c.reply(ctx, f.Ref, charla.Errorf(charla.CodeBadRequest, "%s needs a sku of 1 to %d bytes", f.Type, maxSKUBytes))
		return
	}
	if f.Type == wire.TypeInvalidate {
		if cache := c.deps.bridge.cache; cache != nil {
			cache.Invalidate(f.SKU)
		}
		c.enqueue(wire.Encode(wire.Invalidated{Type: wire.TypeInvalidated, Ref: f.Ref, SKU: f.SKU}))
		return
	}
	resv := f.ReservationID
	if f.Type == wire.TypeReserve && resv == "" {
		// The service's idempotency key: generated here, a reservation is
		// still made once however often the engine retries it.
		var b [12]byte
		_, _ = rand.Read(b[:])
		resv = "res_" + hex.EncodeToString(b[:])
	}
	ctx.Send(c.deps.soap, inventoryReq{op: f.Type, sku: f.SKU, qty: f.Quantity, resv: resv, user: c.user, conn: ctx.Self(), ref: f.Ref})
}
