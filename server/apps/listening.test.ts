import { describe, expect, it } from 'vitest';
import { parseProcNetTcp } from './listening.ts';

// lines as the kernel prints them (trimmed to the first fields that matter plus a few more)
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0000000000000000 20 4 30 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1451 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 6 1 0000000000000000 100 0 0 10 0
`;

describe('parseProcNetTcp', () => {
  it('lists the sockets in LISTEN with their ports and addresses, sorted by port, and skips established ones', () => {
    expect(parseProcNetTcp(TCP + TCP6)).toEqual([
      { port: 22, address: '0.0.0.0' },
      { port: 3000, address: '::1' },
      { port: 5201, address: '::' },
      { port: 8080, address: '127.0.0.1' },
      { port: 9000, address: '127.0.0.1' },
    ]);
  });

  it('ignores lines that are not socket lines, and garbage', () => {
    expect(parseProcNetTcp('hello\n  0: zz:1F90 00000000:0000 0A\n\n1: 0100007F:XYZ0 0 0A')).toEqual([]);
  });
});
