package redisconn_test

import (
	"crypto/tls"
	"reflect"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/certmail/certmail/internal/redisconn"
)

// TestOpenHonoursEveryPart: what the URL says reaches both clients, asynq's
// option and go-redis's client, the go-redis client honours deadlines, and
// the target logged names the database used and no password.
func TestOpenHonoursEveryPart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url    string
		asynq  asynq.RedisConnOpt
		target string
	}{{
		url: "redis-sentinel://:pw@s0:26379,s1:26379/3?master=m",
		asynq: asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s0:26379", "s1:26379"},
			Password: "pw", DB: 3},
		target: "redis-sentinel://s0:26379,s1:26379/3?master=m",
	}, {
		url: "redis-sentinel://app:pw@s0:26379,s1:26380,s2:26381/2?sentinel_password=sp&master=mymaster&sentinel_username=sent",
		asynq: asynq.RedisFailoverClientOpt{MasterName: "mymaster", SentinelAddrs: []string{"s0:26379", "s1:26380", "s2:26381"},
			SentinelUsername: "sent", SentinelPassword: "sp", Username: "app", Password: "pw", DB: 2},
		target: "redis-sentinel://app@s0:26379,s1:26380,s2:26381/2?master=mymaster",
	}, {
		// An @ in the value of one of certmail's parameters is the value's:
		// an ACL user name, a master's name, a sentinel's password.
		url: "redis-sentinel://s0:26379/1?master=my@master&sentinel_username=ops@corp&sentinel_password=p@ss",
		asynq: asynq.RedisFailoverClientOpt{MasterName: "my@master", SentinelAddrs: []string{"s0:26379"},
			SentinelUsername: "ops@corp", SentinelPassword: "p@ss", DB: 1},
		target: "redis-sentinel://s0:26379/1?master=my%40master",
	}, {
		url:    "redis-sentinel://s0:26379?master=m",
		asynq:  asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s0:26379"}},
		target: "redis-sentinel://s0:26379/0?master=m",
	}, {
		url:    "redis://:pw@h:6379/5",
		asynq:  asynq.RedisClientOpt{Addr: "h:6379", Password: "pw", DB: 5},
		target: "redis://h:6379/5",
	}, {
		url:    "redis://app:pw@h:6379",
		asynq:  asynq.RedisClientOpt{Addr: "h:6379", Username: "app", Password: "pw"},
		target: "redis://app@h:6379/0",
	}, {
		url:    "redis://10.0.0.1:6379/",
		asynq:  asynq.RedisClientOpt{Addr: "10.0.0.1:6379"},
		target: "redis://10.0.0.1:6379/0",
	}, {
		url:    "rediss://:pw@redis.example:6380/1",
		asynq:  asynq.RedisClientOpt{Addr: "redis.example:6380", Password: "pw", DB: 1, TLSConfig: &tls.Config{ServerName: "redis.example"}},
		target: "rediss://redis.example:6380/1",
	}} {
		t.Run(tc.url, func(t *testing.T) {
			t.Parallel()
			c, err := redisconn.Open(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Client.Close()
			if !reflect.DeepEqual(c.Opt, tc.asynq) {
				t.Errorf("asynq option\n got %#v\nwant %#v", c.Opt, tc.asynq)
			}
			if c.Target != tc.target {
				t.Errorf("target %q, want %q", c.Target, tc.target)
			}
			rc, ok := c.Client.(*redis.Client)
			if !ok {
				t.Fatalf("go-redis client is a %T", c.Client)
			}
			o := rc.Options()
			want := connFields(tc.asynq)
			if o.DB != want.db || o.Username != want.username || o.Password != want.password {
				t.Errorf("go-redis client: DB %d, user %q, password %q; want %d, %q, %q",
					o.DB, o.Username, o.Password, want.db, want.username, want.password)
			}
			if ro, ok := tc.asynq.(asynq.RedisClientOpt); ok && (o.Addr != ro.Addr || !reflect.DeepEqual(o.TLSConfig, ro.TLSConfig)) {
				t.Errorf("go-redis client: address %q, TLS %v; want %q, %v", o.Addr, o.TLSConfig, ro.Addr, ro.TLSConfig)
			}
			if !o.ContextTimeoutEnabled {
				t.Error("go-redis client ignores context deadlines (ContextTimeoutEnabled is off)")
			}
		})
	}
}

type fields struct {
	db                 int
	username, password string
}

func connFields(o asynq.RedisConnOpt) fields {
	switch o := o.(type) {
	case asynq.RedisClientOpt:
		return fields{o.DB, o.Username, o.Password}
	case asynq.RedisFailoverClientOpt:
		return fields{o.DB, o.Username, o.Password}
	}
	panic("unexpected option type")
}

// TestOpenRefusesWhatItCannotHonour: a part of the URL certmail would not
// use is refused, named, and the password never appears in the error.
func TestOpenRefusesWhatItCannotHonour(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, want string }{
		{"redis-sentinel://:pw@s0:26379/3", "?master=<name>"},
		{"redis-sentinel://:pw@s0:26379/3?master=", "?master=<name>"},
		{"redis-sentinel://:pw@s0:26379/x?master=m", "the path is not a database number"},
		{"redis-sentinel://:pw@s0:26379/3/4?master=m", "the path is not a database number"},
		{"redis://:pw@h:6379/-1", "the path is not a database number"},
		{"redis-sentinel://:pw@s0:26379/3?master=m&db=4", `query parameter "db"`},
		{"redis://:pw@h:6379/0?dial_timeout=3", `query parameter "dial_timeout"`},
		{"redis://:pw@h:6379/0?master=m", `query parameter "master"`},
		{"redis://:pw@h:6379/0?sentinel_password=x", `query parameter "sentinel_password"`},
		{"redis-sentinel://:pw@s0:26379/3?master=m&master=n", `query parameter "master" more than once`},
		{"redis-socket://:pw@/tmp/redis.sock", "want redis://, rediss:// or redis-sentinel://"},
		{"redis://:pw@h/0", `address "h": want host:port`},
		{"redis://:pw@/0", "no host"},
		{"redis-sentinel://:pw@s0,s1:26379/0?master=m", `address "s0": want host:port`},
		{"redis-sentinel://:pw@,s1:26379/0?master=m", `address "": want host:port`},
		{"redis://:pw@h:6379/0#x", "fragment"},
		{"redis://:pw@127.0.0.1:99999/0", `port "99999" of address "127.0.0.1:99999": want a number from 1 to 65535`},
		{"rediss://:pw@h:0/0", `port "0"`},
		{"redis://:pw@[::1]:65536/0", `port "65536"`},
		{"redis-sentinel://:pw@s0:99999,s1:26379/0?master=m", `port "99999" of address "s0:99999"`},
		{"redis-sentinel://:pw@s0:26379,s1:0/0?master=m", `port "0" of address "s1:0"`},
		{"redis-sentinel://:pw@s0:http,s1:26379/0?master=m", `port "http"`},
		{"redis-sentinel://:pw@s0:+80,s1:26379/0?master=m", `port "+80"`},
		// A password cut at its ?, its end read as master or a sentinel's
		// user or password up to the @ before the address.
		{"redis://:12345?master=sec@127.0.0.1:6379/0", "an @ follows the address"},
		{"redis-sentinel://:12345?master=sec@127.0.0.1:26379?master=mymaster", "an @ follows the address"},
		{"redis-sentinel://app:12345?sentinel_username=sec@s0:26379/0?master=m", "an @ follows the address"},
		{"redis-sentinel://app:12345?master=m&sentinel_password=sec@s0:26379", "an @ follows the address"},
		// A value whose @ an address follows reads as one.
		{"redis-sentinel://:pw@s0:26379?master=m&sentinel_username=ops@corp:80", "an @ follows the address"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			t.Parallel()
			c, err := redisconn.Open(tc.url)
			if err == nil {
				c.Client.Close()
				t.Fatalf("accepted: %#v", c.Opt)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "REDIS_URL") {
				t.Errorf("error %q, want it to start with REDIS_URL and name %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "pw") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}
