import '../zod-config.ts';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { App } from './app.tsx';
import './styles.css';

const queries = new QueryClient({
  defaultOptions: {
    queries: {
      // a refused request (403/404) does not get better by asking again; a network error might
      retry: (count, error) => count < 3 && !(error as { status?: number }).status,
      refetchOnWindowFocus: true,
      staleTime: 5_000,
      // den's own connection banner says when den is unreachable; navigator.onLine is only a hint,
      // and pausing on it can leave requests paused after the network came back (TanStack/query#4772)
      networkMode: 'always',
    },
    mutations: { networkMode: 'always' },
  },
});

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <QueryClientProvider client={queries}>
      <App />
    </QueryClientProvider>
  </StrictMode>,
);
