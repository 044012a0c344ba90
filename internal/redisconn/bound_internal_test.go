package redisconn

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestReadTimeoutIsGoRedisDefault: OneShotCommandBound counts go-redis's
// default read timeout, which certmail's clients keep; a go-redis that
// changes it changes the bound the README states.
func TestReadTimeoutIsGoRedisDefault(t *testing.T) {
	c := redis.NewClient(&redis.Options{})
	defer c.Close()
	if got := c.Options().ReadTimeout; got != readTimeout {
		t.Errorf("go-redis's default read timeout is %v, the bound counts %v", got, readTimeout)
	}
	if OneShotCommandBound > 15*time.Second {
		t.Errorf("OneShotCommandBound = %v, over the README's 15 s", OneShotCommandBound)
	}
}
