package actors

import "charla"

// NewSystemWithConversationHook builds trees (for transporttest.WithSystem)
// whose conversation actors call hook before handling each message.
func NewSystemWithConversationHook(hook func(conv charla.ConvID, msg any)) func(Config, Dependencies) (*System, error) {
	return func(cfg Config, dep Dependencies) (*System, error) {
		return newSystem(cfg, dep, &hooks{conversationReceive: hook})
	}
}

// NewSystemWithSOAPHook builds trees whose soap actor calls hook with the
// type name of each message ("actors.callDone") before handling it.
func NewSystemWithSOAPHook(hook func(msgType string)) func(Config, Dependencies) (*System, error) {
	return func(cfg Config, dep Dependencies) (*System, error) {
		return newSystem(cfg, dep, &hooks{soapReceive: hook})
	}
}

// NewSystemWithInboxHook builds trees whose inbox actor calls hook with the
// type name of each message before handling it.
func NewSystemWithInboxHook(hook func(msgType string)) func(Config, Dependencies) (*System, error) {
	return func(cfg Config, dep Dependencies) (*System, error) {
		return newSystem(cfg, dep, &hooks{inboxReceive: hook})
	}
}
