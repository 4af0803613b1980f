/** What every view of the page is: it draws into its root, redraws on `refresh` (polled), and cleans up. */
export interface View {
  refresh(): Promise<void>;
  close(): void;
}
