package actors

import "charla"

// NewSystemWithConversationHook builds trees (for transporttest.WithSystem)
// whose conversation actors call hook before handling each message.
func NewSystemWithConversationHook(hook func(conv charla.ConvID, msg any)) func(Config, Dependencies) (*System, error) {
	return func(cfg Config, dep Dependencies) (*System, error) {
		return newSystem(cfg, dep, &hooks{conversationReceive: hook})
	}
}
