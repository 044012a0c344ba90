// Package redisconn turns REDIS_URL into the two handles certmail needs: an
// asynq connection option and a go-redis client for certmail's own keys,
// both on the same server (or Sentinel group), and waits for Redis to answer.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultURL is REDIS_URL's default.
const DefaultURL = "redis://127.0.0.1:6379/0"

// Conn is one Redis target.
type Conn struct {
	Opt    asynq.RedisConnOpt    // for asynq's client, server, scheduler and inspector
	Client redis.UniversalClient // for certmail's keys; Close it when done
	Target string                // the URL without credentials, for logs
}

// Open parses a redis://, rediss:// or redis-sentinel:// URL.
func Open(rawURL string) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("REDIS_URL is not a URL") // the URL may hold a password: do not echo it
	}
	target := redact(u)
	opt, err := asynq.ParseRedisURI(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL %s: want redis://, rediss:// or redis-sentinel://", target)
	}
	c, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("REDIS_URL %s: unsupported connection type", target)
	}
	return &Conn{Opt: opt, Client: c, Target: target}, nil
}

func redact(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User(c.User.Username())
	}
	if c.Scheme == "" {
		return "(invalid)"
	}
	return c.Redacted()
}

// Wait pings Redis with exponential backoff (up to 30 s between tries) until
// it answers or ctx is done, logging each failed try with the target.
func (c *Conn) Wait(ctx context.Context, log *zap.Logger) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = 0
	err := backoff.RetryNotify(func() error {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		err := c.Client.Ping(pctx).Err()
		if ctx.Err() != nil {
			return backoff.Permanent(ctx.Err())
		}
		return err
	}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
		log.Warn("waiting for Redis", zap.String("redis", c.Target), zap.Error(err), zap.Duration("next_try_in", next))
	})
	if err != nil {
		return fmt.Errorf("wait for Redis at %s: %w", c.Target, err)
	}
	return nil
}
