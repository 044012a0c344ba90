package digicerttest

import (
	"container/list"
	"slices"
)

// idMap holds a value per id for at most limit ids; writing an id makes it
// the newest, and writing one more id than limit forgets the oldest.
// Reading does not count as writing, so tests that look do not change what
// is kept. It needs the Server's lock held.
type idMap[V any] struct {
	limit int
	byID  map[int64]*list.Element // of *idEntry[V]
	order *list.List              // the newest at the front
}

// idEntry is one id of an idMap and its value.
type idEntry[V any] struct {
	id    int64
	value V
}

// newIDMap returns an empty idMap that keeps limit ids.
func newIDMap[V any](limit int) *idMap[V] {
	return &idMap[V]{limit: limit, byID: map[int64]*list.Element{}, order: list.New()}
}

// get returns the value of id and whether it is kept.
func (m *idMap[V]) get(id int64) (V, bool) {
	e, ok := m.byID[id]
	if !ok {
		var zero V
		return zero, false
	}
	return e.Value.(*idEntry[V]).value, true
}

// put sets the value of id and makes it the newest; it returns the id it
// forgot to make room, if any.
func (m *idMap[V]) put(id int64, value V) (forgot int64, ok bool) {
	if e, kept := m.byID[id]; kept {
		e.Value.(*idEntry[V]).value = value
		m.order.MoveToFront(e)
		return 0, false
	}
	m.byID[id] = m.order.PushFront(&idEntry[V]{id: id, value: value})
	if m.order.Len() <= m.limit {
		return 0, false
	}
	oldest := m.order.Back()
	m.order.Remove(oldest)
	forgot = oldest.Value.(*idEntry[V]).id
	delete(m.byID, forgot)
	return forgot, true
}

// remove forgets id.
func (m *idMap[V]) remove(id int64) {
	if e, ok := m.byID[id]; ok {
		m.order.Remove(e)
		delete(m.byID, id)
	}
}

// len returns how many ids are kept.
func (m *idMap[V]) len() int {
	return m.order.Len()
}

// appendLog adds entry to the log of id, which keeps its newest
// MaxSendsPerID entries.
func appendLog[T any](m *idMap[[]T], id int64, entry T) {
	log, _ := m.get(id)
	log = append(log, entry)
	if over := len(log) - MaxSendsPerID; over > 0 {
		log = slices.Delete(log, 0, over) // in place: the backing array stays MaxSendsPerID+1 long
	}
	m.put(id, log)
}
