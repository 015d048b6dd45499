// Package httpserve runs the HTTP servers of the stand-ins for other
// people's services (the SOAP simulator, the fake Graph API) the same way.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Grace bounds how long Until waits for answers in flight at shutdown.
const Grace = 5 * time.Second

// Until serves h on ln until ctx ends, then calls release (to free calls a
// simulator holds on purpose, so that shutdown does not wait on them) and
// shuts down gracefully within Grace. It returns nil after a shutdown
// caused by ctx, or the error that stopped serving, named after name.
func Until(ctx context.Context, name string, ln net.Listener, h http.Handler, release func()) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		release()
		return fmt.Errorf("%s: serve: %w", name, err)
	case <-ctx.Done():
	}
	release()
	sctx, cancel := context.WithTimeout(context.Background(), Grace)
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("%s: shutdown: %w", name, err), hs.Close())
	}
	<-errc // http.ErrServerClosed
	return err
}
