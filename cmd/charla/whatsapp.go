package main

import (
	"fmt"

	"charla/actors"
	"charla/media"
	"charla/store"
	"charla/whatsapp"
)

// openInbound builds the WhatsApp webhook's dependencies when the channel
// is configured (nil when it is off): the store's webhook records, a Graph
// API client for media, and the media storage.
func openInbound(cfg config, st store.Store, ms *media.Store) (*actors.Inbound, error) {
	wc := cfg.Transport.WhatsApp
	if !wc.Enabled() {
		return nil, nil
	}
	ws, ok := st.(actors.WebhookStore)
	if !ok {
		return nil, fmt.Errorf("whatsapp: the store %T keeps no webhook events", st)
	}
	graph, err := whatsapp.NewClient(wc.GraphURL, wc.Token, whatsapp.ClientOptions{})
	if err != nil {
		return nil, err
	}
	in := &actors.Inbound{Store: ws, Graph: graph}
	if ms != nil {
		in.Media = ms
	}
	return in, nil
}

// graphOf is the Graph API client replies go out through: the inbound
// side's (one client, one connection pool, both ways), nil when the channel
// is off.
func graphOf(in *actors.Inbound) actors.GraphSender {
	if in == nil {
		return nil
	}
	if g, ok := in.Graph.(*whatsapp.Client); ok { // openInbound made it
		return g
	}
	return nil
}
