/**
 * Placement on a supplier: which span of a model's fragments it hosts (chosen where the swarm is weakest,
 * within its memory) and when it moves (the swarm badly balanced, confirmed twice). The pure decisions
 * live in scheduler/placement.ts; here are the model data from a manifest, the swarm read from capacity
 * records, and the agent that joins and rebalances.
 */
export { DEFAULT_KV_TOKENS, kvBytesPerToken, placementModelOf, type ModelPlacementInfo } from './model.js';
export { isJoining, joiningFragment, placedServers, settledHolders, spansOfIndices, swarmFromRecords, type Span, type SwarmMember } from './swarm.js';
export {
  PlacementAgent, PlacementError, type CheckOutcome, type PlacementAgentInit, type PlacementSelf, type PlacementStatus, type SpanHost,
} from './agent.js';
