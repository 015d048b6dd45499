package pebble

const crashChildEnv = "CHARLA_PEBBLE_CRASH_CHILD"

func crashChild() int { return 0 }
