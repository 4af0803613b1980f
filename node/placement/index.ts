/**
 * Placement on a supplier: which span of a model's fragments it hosts (chosen where the swarm is weakest,
 * within its memory) and when it moves (the swarm badly balanced, confirmed twice). The pure decisions
 * live in policy/placement.ts; here are the model data from a manifest, the swarm read from capacity
 * records, and the agent that joins and rebalances.
 */
export {
  PlacementAgent, PlacementError, type CheckOutcome, type PlacementAgentInit, type PlacementSelf, type PlacementStatus, type SpanHost,
} from './agent.js';
