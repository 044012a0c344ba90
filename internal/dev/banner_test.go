package dev

import (
	"strings"
	"testing"
)

// TestBannerRedactsRedisPassword: the banner names an external Redis
// without the password its URL holds.
func TestBannerRedactsRedisPassword(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	printBanner(&b, &Stack{RedisURL: "redis://:s3cret-pw@redis.example:6379/2", APIURL: "http://127.0.0.1:1"}, nil, 3)
	if strings.Contains(b.String(), "s3cret-pw") || !strings.Contains(b.String(), "redis.example:6379/2 (EXTERNAL") {
		t.Errorf("banner:\n%s", b.String())
	}
}
