package ext4

import (
	"container/list"
	"sync"
)

// lru is a bounded least-recently-used map, split into shards so that
// concurrent readers rarely contend on one mutex. Each entry has a cost
// (bytes for blocks, 1 for parsed objects); a shard evicts from its tail
// once its share of the budget is spent. Values are shared between readers
// and must never be modified after insertion.
//
// The cache holds only clean, verified copies of device data today; a
// writable filesystem will need a separate dirty set that eviction never
// touches, so keep this type free of write-back logic.
type lru[K comparable, V any] struct {
	shards []lruShard[K, V]
}

type lruShard[K comparable, V any] struct {
	mu     sync.Mutex
	budget int
	used   int
	order  list.List // front = most recent; elements hold *lruEntry
	items  map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key  K
	val  V
	cost int
}

const lruShards = 16

func newLRU[K comparable, V any](budget int) *lru[K, V] {
	c := &lru[K, V]{shards: make([]lruShard[K, V], lruShards)}
	per := budget / lruShards
	if per < 1 {
		per = 1
	}
	for i := range c.shards {
		c.shards[i].budget = per
		c.shards[i].items = make(map[K]*list.Element)
	}
	return c
}

func (c *lru[K, V]) shard(h uint64) *lruShard[K, V] {
	// Fibonacci hashing spreads sequential block and inode numbers.
	return &c.shards[(h*0x9E3779B97F4A7C15)>>60%lruShards]
}

func (c *lru[K, V]) get(k K, h uint64) (V, bool) {
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.items[k]; ok {
		s.order.MoveToFront(e)
		return e.Value.(*lruEntry[K, V]).val, true
	}
	var zero V
	return zero, false
}

func (c *lru[K, V]) put(k K, h uint64, v V, cost int) {
	s := c.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if cost > s.budget {
		return // larger than the whole shard: not worth caching
	}
	if e, ok := s.items[k]; ok {
		old := e.Value.(*lruEntry[K, V])
		s.used += cost - old.cost
		old.val, old.cost = v, cost
		s.order.MoveToFront(e)
	} else {
		s.items[k] = s.order.PushFront(&lruEntry[K, V]{key: k, val: v, cost: cost})
		s.used += cost
	}
	for s.used > s.budget {
		back := s.order.Back()
		ent := back.Value.(*lruEntry[K, V])
		s.order.Remove(back)
		delete(s.items, ent.key)
		s.used -= ent.cost
	}
}

// len reports the number of entries, for tests.
func (c *lru[K, V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.items)
		s.mu.Unlock()
	}
	return n
}
