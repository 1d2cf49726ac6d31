/**
 * Defaults shared by the command line and the code that runs with them. They live here, below
 * both, so the CLI never imports the verify engine for a number and the engine never imports the CLI.
 *
 * @module
 */

/** CLI defaults of the verify options. */
export const VERIFY_DEFAULTS: Readonly<
  {
    sample: number;
    minParity: number;
    ttlToleranceSeconds: number;
    recheck: number;
    recheckDelayMs: number;
    rps: number;
  }
> = {
  sample: 1000,
  minParity: 100,
  ttlToleranceSeconds: 5,
  recheck: 3,
  // Long enough for an in-flight dual write (two commands) to land; three rounds stay well
  // inside the latency budget of a default verify.
  recheckDelayMs: 100,
  rps: 0,
};
