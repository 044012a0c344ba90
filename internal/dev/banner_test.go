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
	// A Sentinel URL's passwords, the sentinels' in its query too.
	b.Reset()
	printBanner(&b, &Stack{RedisURL: "redis-sentinel://:m4ster-pw@s1:26379,s2:26379/2?master=m&sentinel_password=sentinel-s3cret",
		APIURL: "http://127.0.0.1:1"}, nil, 3)
	if strings.Contains(b.String(), "m4ster-pw") || strings.Contains(b.String(), "sentinel-s3cret") || !strings.Contains(b.String(), "s1:26379") {
		t.Errorf("banner of a Sentinel URL:\n%s", b.String())
	}
}
