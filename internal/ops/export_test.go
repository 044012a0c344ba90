package ops

// LookupBatch is lookupBatch, for the tests of the lookups by id.
const LookupBatch = lookupBatch
